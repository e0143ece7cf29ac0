"""The model the storage tests hold a store's contents in (a dict of key -> value and content
type), and what an open store holds, read back in that shape."""

from __future__ import annotations

from logkv import Engine

#: What the model holds for a key: its value (None for a set to None) and its content type.
Value = tuple[bytes | None, str | None]
#: A store's contents: every live key with its value and content type.
Model = dict[str, Value]


def dump(engine: Engine) -> Model:
    """Every key of an open store with its value and content type, read back from disk."""
    state: Model = {}
    for key in engine.keys(exclusive_start_key=None):
        found = engine.get_with_type(key)
        assert found is not None, key
        state[key] = found
    return state

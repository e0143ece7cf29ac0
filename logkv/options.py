"""Deprecated: the engine's modes and limits moved to :mod:`logkv.modes`.

``from logkv.options import Durability`` still works and warns; import from :mod:`logkv` or
:mod:`logkv.modes` instead.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import modes


def __getattr__(name: str) -> Any:
    value = getattr(modes, name)  # AttributeError for a name modes does not have either
    warnings.warn(
        f"logkv.options.{name} moved to logkv.modes.{name}", DeprecationWarning, stacklevel=2
    )
    return value

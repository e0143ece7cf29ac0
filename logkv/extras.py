"""The optional extras (``crawlee``, ``s3``, ``web``): a missing one is named with the command
that installs it, instead of a bare ``No module named ...``."""

from __future__ import annotations

from importlib import import_module


def require_extra(module: str, extra: str, feature: str) -> None:
    """Raise ``ModuleNotFoundError`` naming ``pip install 'logkv[extra]'`` when ``module`` (the
    extra's library) is not installed; ``feature`` says what needs it."""
    try:
        import_module(module)  # imported next by the extra's code anyway
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{feature} needs the {extra} extra, which is not installed: "
            f"pip install 'logkv[{extra}]' ({exc})",
            name=module,
        ) from exc

"""The one line a user sees when an adapter's framework is not installed."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(adapter: str, extra: str, exc: ImportError) -> ModuleNotFoundError:
    """``tenure.adapters.X needs the 'X' extra: pip install 'tenure[X]' (no module named Y)``."""
    err = ModuleNotFoundError(
        f"tenure.adapters.{adapter} needs the {extra!r} extra: pip install 'tenure[{extra}]' "
        f"(no module named {exc.name!r})"
    )
    err.name = exc.name
    return err

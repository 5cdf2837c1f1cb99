"""Small shared helpers."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["NoPublicConstructor"]

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass for objects only the runtime creates (``Cls._create(...)``), as in trio."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor: "
            "the runtime creates these objects"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        obj: T = super().__call__(*args, **kwargs)  # type: ignore[misc]
        return obj

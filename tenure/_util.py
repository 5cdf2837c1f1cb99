"""Small shared helpers: objects only the runtime creates, and classes that are final."""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar
from typing import final as _typing_final

__all__ = ["NoPublicConstructor", "final"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


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


def final(cls: C) -> C:
    """Mark a public class final: type checkers refuse subclasses, and so does Python.

    A subclass of a governance object could override what the runtime relies on (a lease
    that reports wider scopes, a handle that hides a stop), so the public classes of Tenure
    are closed; extension points are Protocols instead.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"

    def refuse(sub: type, /, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{name} is final: it cannot be subclassed (got {sub.__qualname__})")

    cls.__init_subclass__ = classmethod(refuse)  # type: ignore[assignment]
    return _typing_final(cls)

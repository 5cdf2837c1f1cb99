"""Checks of the values callers hand to the public entry points, made before anything exists.

``Runtime.start``/``run`` (principal, scopes, ttl), ``ctx.delegate(scopes=...)`` and
``ctx.record_usage`` check their arguments here, before a run directory, a file descriptor,
a lease or a counter is touched. A wrong type is a ``TypeError``, a wrong value a
``ValueError``; each message names the parameter, the value and the rule.
"""

from __future__ import annotations

import math
import operator
import unicodedata
from collections.abc import Iterable
from typing import Final

__all__ = [
    "MAX_PRINCIPAL_CHARS",
    "MAX_SCOPE_CHARS",
    "MAX_TTL_SECONDS",
    "check_principal",
    "check_scopes",
    "check_ttl",
    "check_usage",
]

#: The longest principal accepted (characters).
MAX_PRINCIPAL_CHARS: Final = 256
#: The longest scope name accepted (characters).
MAX_SCOPE_CHARS: Final = 128
#: The longest a principal can authorize one run for (30 days).
MAX_TTL_SECONDS: Final = 30 * 24 * 3600.0


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _has_control(text: str) -> bool:
    # Cc: C0/C1 controls (newline, escape, NUL); Zl/Zp: line and paragraph separators.
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def _label(param: str, value: object, limit: int) -> str:
    if type(value) is not str:
        raise TypeError(f"{param} must be a str, got {type(value).__name__} {_short(value)}")
    if not value or len(value) > limit:
        raise ValueError(
            f"{param} must be 1 to {limit} characters, got {len(value)} ({_short(value)})"
        )
    if _has_control(value):
        raise ValueError(
            f"{param} must not contain control characters (they forge lines in logs and "
            f"evidence views), got {_short(value)}"
        )
    return value


def check_principal(principal: object) -> str:
    """A principal: a ``str`` of 1 to :data:`MAX_PRINCIPAL_CHARS` characters, no controls."""
    return _label("principal", principal, MAX_PRINCIPAL_CHARS)


def check_scopes(scopes: object, param: str = "scopes") -> frozenset[str]:
    """A set of scope names: an iterable (never a single ``str``) of scope strings."""
    if isinstance(scopes, str | bytes):
        raise TypeError(
            f"{param} must be a collection of scope names, not the single string "
            f"{_short(scopes)} (write {{{scopes!r}}})"
        )
    if scopes is None or not isinstance(scopes, Iterable):
        raise TypeError(
            f"{param} must be a collection of scope names, got {type(scopes).__name__} "
            f"{_short(scopes)}"
        )
    return frozenset(_label(f"{param} entry", s, MAX_SCOPE_CHARS) for s in scopes)


def check_ttl(ttl: object) -> float:
    """A run's ttl: a finite number of seconds, > 0 and at most :data:`MAX_TTL_SECONDS`."""
    if type(ttl) not in (int, float):
        raise TypeError(f"ttl must be a number of seconds, got {type(ttl).__name__} {ttl!r}")
    value = float(ttl)  # type: ignore[arg-type]
    if not math.isfinite(value) or not 0 < value <= MAX_TTL_SECONDS:
        raise ValueError(
            f"ttl must be a finite number of seconds > 0 and <= {MAX_TTL_SECONDS:g} "
            f"(30 days), got {ttl!r}"
        )
    return value


def check_usage(tokens: object, cost: object) -> tuple[int, float]:
    """Reported usage: ``tokens`` a non-negative integer, ``cost`` a finite number >= 0.

    Converted once (``operator.index``, ``float``) and checked after the conversion, so a
    value whose conversion lies still ends up a plain, finite, non-negative number.
    """
    try:
        if isinstance(tokens, bool):
            raise TypeError
        count = operator.index(tokens)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"tokens must be an integer, got {type(tokens).__name__} {_short(tokens)}"
        ) from None
    try:
        if isinstance(cost, bool | str | bytes):
            raise TypeError
        value = float(cost)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(
            f"cost must be a number, got {type(cost).__name__} {_short(cost)}"
        ) from None
    if not 0 <= count <= 2**53 - 1:
        raise ValueError(f"tokens must be between 0 and 2**53-1, got {count}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
    return count, value

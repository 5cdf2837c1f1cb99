"""``matches`` conditions on RE2: linear time in the input, whatever the pattern.

Python's ``re`` backtracks: ``(a+)+`` against forty ``a`` followed by a ``b`` runs for
longer than the universe, holding the event loop (and so every run of the process) while
it does. RE2 (the ``google-re2`` package) compiles patterns to automata and never
backtracks; in exchange it refuses what needs backtracking (backreferences, lookaround),
and such a pattern is refused when the policy loads, with the file and line.

Invariants:

* A pattern is compiled once, when the policy is validated; :func:`compile_regex` raises
  ``ValueError`` (the loader turns it into ``file:line: reason``) for one RE2 refuses.
* A condition looks at no more than :data:`MAX_MATCH_CHARS` characters: a longer value
  cannot be evaluated, and a condition that cannot be evaluated denies (fail closed).
* A value RE2 cannot take (text with lone surrogates) cannot be evaluated either.
"""

from __future__ import annotations

from typing import Final

import re2  # type: ignore[import-untyped]

__all__ = ["MAX_MATCH_CHARS", "Regex", "compile_regex"]

#: The longest argument a ``matches`` condition evaluates (characters).
MAX_MATCH_CHARS: Final = 65536

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is ours to report (file:line), not RE2's on stderr
# Only "does the whole value match" is asked: no capture groups to fill, and with both ends
# anchored leftmost-longest finds a match exactly when leftmost-first would (faster DFA).
_OPTIONS.never_capture = True
_OPTIONS.longest_match = True


class Regex:
    """A compiled whole-string pattern."""

    __slots__ = ("_rx", "pattern")

    def __init__(self, pattern: str, rx: object) -> None:
        self.pattern = pattern
        self._rx = rx

    def fullmatch(self, text: str) -> bool | str:
        """Whether ``text`` matches entirely; a reason string when it cannot be evaluated."""
        if len(text) > MAX_MATCH_CHARS:
            return (
                f"the value is {len(text)} characters long, more than the {MAX_MATCH_CHARS} "
                "a matches condition evaluates"
            )
        try:
            # Matched as UTF-8 bytes (what RE2 works on): the binding's str path also maps
            # every byte offset back to a character offset, which doubles the cost.
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            return "the value holds lone surrogates, which are not text a pattern can match"
        return self._rx.fullmatch(data) is not None  # type: ignore[attr-defined]


def compile_regex(pattern: str) -> Regex:
    """Compile ``pattern`` with RE2; ``ValueError`` naming the pattern and RE2's reason."""
    try:
        rx = re2.compile(pattern.encode("utf-8"), _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(
            f"bad regex {pattern!r}: {detail} (patterns use RE2 syntax, which has no "
            "backreferences or lookaround, so that a match can never run away)"
        ) from None
    except (TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    return Regex(pattern, rx)

"""A ledger whose next record is prepared two ways and chained once the choice is known.

A run on a shared backend takes each step's budget debit in the same transaction as the
step's ``step.start`` record: whether the step starts is decided by the database, after
the record had to be written (its bytes are what the transaction stores). The hash chain
allows one continuation only, so :meth:`ForkingLedger.fork` computes both — the record if
the step starts and the one that says it did not — from the same chain position, hands
both to the caller (one goes in the transaction, the other as its alternative) and chains
neither until :meth:`ForkingLedger.settle` says which the database kept.

Invariants:

- While a fork is open nothing is chained, flushed or checkpointed: other tasks' records
  are held in order with the index and time they were appended at (indexes do not depend
  on the choice: both continuations are one record), and settling chains the chosen record,
  then each held one, then flushes them together — the held ones included, so a record
  appended with ``flush=True`` during the fork reaches the OS at the settle.
- Records chained before the fork are handed to the OS when it opens, so the caller can
  ship them in the same transaction.
- One fork at a time; sealing (or closing) with a fork open chains the second
  (did-not-start) record first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..crypto import record_bytes
from ._ledger import _RESERVED, Ledger

__all__ = ["ForkingLedger"]


@dataclass(slots=True)
class _Fork:
    index: int
    lines: tuple[bytes, bytes]
    kinds: tuple[str, str]
    t: int
    held: list[tuple[int, str, dict[str, Any], str, str]] = field(default_factory=list)
    checkpoint_due: bool = False


class ForkingLedger(Ledger):
    """A :class:`~._ledger.Ledger` with :meth:`fork` and :meth:`settle` (module docstring)."""

    __slots__ = ("_fork",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fork: _Fork | None = None

    @property
    def size(self) -> int:
        """Number of records appended (held ones and an open fork's included)."""
        fork = self._fork
        return self._tree.size if fork is None else fork.index + 1 + len(fork.held)

    @property
    def forked(self) -> bool:
        """Whether a fork is open."""
        return self._fork is not None

    def fork(
        self,
        first: tuple[str, dict[str, Any]],
        second: tuple[str, dict[str, Any]],
        *,
        trace: str = "",
        span: str = "",
    ) -> tuple[int, bytes, bytes]:
        """The next record two ways: its index and both lines (with their newline)."""
        if self._failure is not None:
            raise self._error()
        if self._closed:
            raise RuntimeError(f"ledger {self.path} is closed")
        if self._fork is not None:
            raise RuntimeError(f"ledger {self.path} has a fork open already")
        for _, fields in (first, second):
            if not _RESERVED.isdisjoint(fields):
                raise ValueError(f"fields may not set common record fields: {sorted(fields)}")
        self._flush()
        index = self._tree.size
        t = self.clock()
        common = {"i": index, "t": t, "prev": self._prev, "trace": trace, "span": span}
        lines = tuple(
            record_bytes({**common, **fields, "kind": kind}) for kind, fields in (first, second)
        )
        self._fork = _Fork(index, (lines[0], lines[1]), (first[0], second[0]), t)
        return index, lines[0] + b"\n", lines[1] + b"\n"

    def settle(self, choice: int) -> None:
        """Chain the fork's record ``choice`` (0 or 1), then every record held meanwhile."""
        fork = self._fork
        if fork is None:
            raise RuntimeError(f"ledger {self.path} has no fork open")
        if choice not in (0, 1):
            raise ValueError(f"a fork is settled with 0 or 1, got {choice!r}")
        self._fork = None
        self._chain(fork.lines[choice], fork.kinds[choice], fork.t)
        for t, kind, fields, trace, span in fork.held:
            rec = {
                "i": self._tree.size,
                "t": t,
                "kind": kind,
                "prev": self._prev,
                "trace": trace,
                "span": span,
            }
            rec.update(fields)
            self._chain(record_bytes(rec), kind, t)
        self.flush()
        if (
            fork.checkpoint_due
            or self._tree.size - self._cp_size >= self._every
            or (self._interval and time.monotonic() - self._cp_time >= self._interval)
        ):
            self.checkpoint()

    def append(
        self,
        kind: str,
        fields: dict[str, Any],
        *,
        trace: str = "",
        span: str = "",
        flush: bool = True,
        owned: bool = False,
    ) -> int:
        fork = self._fork
        if fork is None:
            return super().append(kind, fields, trace=trace, span=span, flush=flush, owned=owned)
        if self._failure is not None:
            raise self._error()
        if not _RESERVED.isdisjoint(fields):
            raise ValueError(f"fields may not set common record fields: {sorted(fields)}")
        fork.held.append((self.clock(), kind, dict(fields), trace, span))
        return fork.index + len(fork.held)

    def flush(self) -> None:
        if self._fork is None:
            super().flush()

    def checkpoint(self) -> None:
        fork = self._fork
        if fork is None:
            super().checkpoint()
        else:
            fork.checkpoint_due = True

    def seal(self) -> None:
        if self._fork is not None and self._failure is None and not self._closed:
            self.settle(1)
        super().seal()

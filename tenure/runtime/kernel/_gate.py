"""The governed coroutine wrapper: a check before every resumption.

:class:`Governed` drives a coroutine by hand (``send``/``throw``) and re-yields whatever it
suspends on, so it sees every suspension of the coroutine and of everything it awaits
(tool calls run inline, so a tool's awaits are the agent's suspensions too). Before each
resumption the wrapper compares, in O(1) and without any signature work:

- the run's stop flag (set synchronously by revocation, the watchdog, the stall detector);
- the lease's revoked flag and monotonic deadline;
- the governance epoch the task was last validated under;
- the watchdog's heartbeat deadline.

Invariants:

- A failed check is thrown into the coroutine once, as the violation, so its ``except`` and
  ``finally`` blocks run and it can unwind.
- A coroutine that suspends again after that (it swallowed the violation or a
  ``CancelledError``) is never resumed again: the wrapper raises the violation itself,
  the run records the task as uncooperative, and the suspended coroutine is entombed:
  kept suspended for the life of the process and never closed, because closing throws
  ``GeneratorExit`` into it, and a handler that swallows everything can then spin forever
  (seen when the garbage collector closed one in a worker thread).
- A coroutine that swallowed the violation and *returned* has its value discarded.
"""

from __future__ import annotations

import ctypes
from collections.abc import Coroutine, Generator
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from ..._errors import GovernanceViolation

if TYPE_CHECKING:
    from ._state import GovState, LeaseState

__all__ = ["Gate", "GateHost", "Governed"]

_DONE: Any = object()


class GateHost(Protocol):
    """What a gate reads of its run on every resumption, and asks on the slow path."""

    @property
    def stop(self) -> GovernanceViolation | None:
        """The run's stop, if it stopped (set synchronously by whoever stops it)."""
        ...

    @property
    def gov(self) -> GovState:
        """The runtime's governance state (epoch, watchdog heartbeat)."""
        ...

    def failed_check(self, gate: Gate) -> GovernanceViolation | None:
        """Find what failed (stopping the run), or revalidate the gate's epoch."""
        ...

    def note_uncooperative(self, gate: Gate, how: str) -> None:
        """Record that a task kept going after its stop."""
        ...


class Gate:
    """The per-task state the wrapper checks: which run, which lease, which epoch."""

    __slots__ = ("epoch", "gov", "lease", "run", "task")

    def __init__(self, run: GateHost, lease: LeaseState, task: str) -> None:
        self.run = run
        self.gov = run.gov
        self.lease = lease
        self.task = task
        self.epoch = run.gov.epoch


class Governed:
    """Awaitable that runs ``coro`` under ``gate`` (see the module docstring)."""

    __slots__ = ("_coro", "_gate", "_result", "_stopped")

    def __init__(self, coro: Coroutine[Any, Any, Any], gate: Gate) -> None:
        self._coro = coro
        self._gate = gate
        self._stopped: GovernanceViolation | None = None
        self._result: Any = None

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        send = coro.send
        gate = self._gate
        run, gov, lease = gate.run, gate.gov, gate.lease
        clock = monotonic  # locals: this loop runs once per resumption
        value: Any = None
        error: BaseException | None = None
        while True:
            # The O(1) check, inlined. A revoked lease always sets ``run.stop`` too, so the
            # revoked flag is read only on the slow path.
            if (
                error is None
                and run.stop is None
                and gate.epoch == gov.epoch
                and (now := clock()) < lease.deadline
                and now < gov.watchdog_deadline
            ):
                try:
                    yielded = send(value)
                except StopIteration as done:
                    return done.value
            else:
                yielded = self._slow_step(value, error)
                if yielded is _DONE:
                    return self._result
            value = error = None
            try:
                value = yield yielded
            except BaseException as exc:  # forwarded into the coroutine, as asyncio would
                error = exc

    def _slow_step(self, value: Any, error: BaseException | None) -> Any:
        """One resumption when the fast check did not pass (or an exception is pending).

        Returns what the coroutine yielded, or ``_DONE`` with ``self._result`` set.
        """
        gate = self._gate
        run, gov, lease = gate.run, gate.gov, gate.lease
        now = monotonic()
        if (
            run.stop is None
            and gate.epoch == gov.epoch
            and now < lease.deadline
            and now < gov.watchdog_deadline
        ):
            violation = None
        else:
            violation = run.failed_check(gate)
        stopped = self._stopped
        if violation is not None:
            # The run's one stop instance, thrown into every task: its traceback is cleared
            # each time so it does not collect the frames of all of them (Run.stop_error).
            if stopped is not None:
                self._abandon(stopped)
                raise stopped.with_traceback(None)
            self._stopped = stopped = violation
            error = violation.with_traceback(None)
        try:
            return self._coro.send(value) if error is None else self._coro.throw(error)
        except StopIteration as done:
            if stopped is not None:
                run.note_uncooperative(gate, "returned after the stop")
                raise stopped.with_traceback(None) from None
            self._result = done.value
            return _DONE

    def _abandon(self, violation: GovernanceViolation) -> None:
        """Entomb a coroutine that kept going after the stop: it is not resumed again."""
        self._gate.run.note_uncooperative(self._gate, "suspended again after the stop")
        _entomb(self._coro)


def _entomb(coro: Coroutine[Any, Any, Any]) -> None:
    # One deliberately leaked reference: the coroutine is never deallocated, so neither
    # the garbage collector nor interpreter shutdown ever finalizes (resumes) it.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(coro))

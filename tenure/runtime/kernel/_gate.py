"""The governed coroutine wrapper: one gate per task, a check before every resumption.

Every governed task (a run's root agent, each fan-out branch, each delegated agent) drives
its coroutine through exactly one :func:`governed` wrapper, and the wrapper is the
outermost thing the task runs: no anyio cancel scope or task group is entered in the task
outside it. Tool calls run inline in the calling agent's task, under its gate; an agent step
that runs in a fresh task switches that task's gate to its own lease (:meth:`Gate.bind`). So
a resumption costs one check whatever the delegation depth.

The check, O(1) and without signature work, compares before each resumption:

- the run's stop flag (set synchronously by revocation, the watchdog, the stall detector);
- the gate's current lease's monotonic deadline (a revoked lease always sets the stop too);
- the governance epoch the task was last validated under;
- the watchdog's heartbeat deadline.

Invariants:

- The stop is thrown into the coroutine once, as the violation (in place of whatever was
  pending, such as anyio's ``CancelledError``), so its ``except`` and ``finally`` run.
- **Cleanup, bounded.** After that the coroutine is resumed as anyio would resume it: the
  run's cancel scope is cancelled (level-triggered), so unshielded awaits raise at once and
  shielded ones complete. This lasts until the coroutine ends or the run's cleanup deadline
  (the stop's time + ``RuntimeConfig.cleanup_grace``) passes. No governed action starts
  during cleanup: the run refuses it before any decision, and a task that tries is recorded
  as uncooperative.
- **Abandoned after the grace.** A coroutine still running at the deadline is never resumed
  again: the run's grace timer cancels the host task natively (so a task parked in a
  shielded wait wakes), the wrapper records the abandonment (``task.uncooperative``) and
  raises the stop without resuming the coroutine, which is entombed: kept suspended for the
  life of the process and never closed (closing throws ``GeneratorExit`` into it, and a
  handler that swallows everything can then spin forever). Because the wrapper is the
  task's outermost frame, the cancel scopes the abandoned coroutine still holds belong to a
  task that ends here: no other task's cancel-scope stack, and not the host's task group, is
  left pointing at them.
- A coroutine that swallowed the stop and *returned* has its value discarded.
"""

from __future__ import annotations

import asyncio
import ctypes
import types
from collections.abc import Coroutine, Generator
from time import monotonic
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import anyio

from ..._errors import GovernanceViolation

if TYPE_CHECKING:
    from ._state import GovState, LeaseState

__all__ = ["Gate", "GateHost", "governed"]


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

    @property
    def cleanup_deadline(self) -> float:
        """Monotonic time at which the stopped run's cleanup grace ends (inf while live)."""
        ...

    def failed_check(self, gate: Gate) -> GovernanceViolation | None:
        """Find what failed (stopping the run), or revalidate the gate's epoch."""
        ...

    def gate_started(self, gate: Gate) -> None:
        """A task began running under ``gate`` (the grace timer may wake it)."""
        ...

    def gate_ended(self, gate: Gate) -> None:
        """The task of ``gate`` ended (or was abandoned)."""
        ...

    def note_uncooperative(self, gate: Gate, how: str) -> None:
        """Record that a task kept going after its stop."""
        ...


class Gate:
    """The per-task state the wrapper checks: which run, which lease, which epoch.

    ``stopped`` is set once the stop was thrown into the task (its cleanup began);
    ``abandon`` is set by the run's grace timer when the cleanup deadline passed.
    """

    __slots__ = ("abandon", "epoch", "gov", "host", "lease", "run", "stopped", "task")

    def __init__(self, run: GateHost, lease: LeaseState, task: str) -> None:
        self.run = run
        self.gov = run.gov
        self.lease = lease
        self.task = task
        self.epoch = run.gov.epoch
        self.host: asyncio.Task[Any] | None = None
        self.stopped: GovernanceViolation | None = None
        self.abandon = False

    def bind(self, lease: LeaseState, task: str) -> None:
        """Run the rest of this task under ``lease`` (an agent step starting in it)."""
        self.lease = lease
        self.task = task

    def wake_to_abandon(self) -> None:
        """The cleanup grace is over: wake the task (even from a shielded wait) to end it."""
        self.abandon = True
        host = self.host
        if host is not None and not host.done():
            # A native cancel, not anyio's: a shielded scope would hold anyio's back, and a
            # task parked there must still be woken to be abandoned.
            host.cancel()


@types.coroutine
def governed(coro: Coroutine[Any, Any, Any], gate: Gate) -> Generator[Any, Any, Any]:
    """Run ``coro`` under ``gate`` (see the module docstring): ``await governed(coro, gate)``.

    A generator-based coroutine, not an object with ``__await__``: a live task then holds
    this one frame, and no wrapper object beside it for the collector to walk.
    """
    run, gov = gate.run, gate.gov
    clock = monotonic  # locals: this loop runs once per resumption
    value: Any = None
    error: BaseException | None = None
    gate.host = asyncio.current_task()
    run.gate_started(gate)
    try:
        while True:
            # The O(1) check, inlined. A revoked lease always sets ``run.stop`` too, so
            # the revoked flag is read only on the slow path.
            if (
                error is None
                and run.stop is None
                and gate.epoch == gov.epoch
                and (now := clock()) < gate.lease.deadline
                and now < gov.watchdog_deadline
            ):
                try:
                    yielded = coro.send(value)
                except StopIteration as done:
                    return done.value
            else:
                yielded = _slow_step(coro, gate, value, error)
                if type(yielded) is _Done:
                    return yielded.value
            value = error = None
            try:
                value = yield yielded
            except BaseException as exc:  # forwarded into the coroutine, as asyncio would
                error = exc
    finally:
        # The task's own context holds its agent's Context, which reaches this gate:
        # unlinked here, a finished task is freed at once, not left to the collector.
        gate.host = None
        run.gate_ended(gate)


class _Done:
    """What the slow path returns when the coroutine finished: its value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _slow_step(
    coro: Coroutine[Any, Any, Any], gate: Gate, value: Any, error: BaseException | None
) -> Any:
    """One resumption when the fast check did not pass (or an exception is pending).

    Returns what the coroutine yielded, or a :class:`_Done` with its value.
    """
    run = gate.run
    stopped = gate.stopped
    if gate.abandon or (stopped is not None and monotonic() >= run.cleanup_deadline):
        _abandon(coro, gate, stopped)
    if stopped is None:
        # A stopped run's tasks all come here at once: its stop, with no check to run.
        violation = run.stop if run.stop is not None else _check(gate)
        if violation is not None:
            # The run's one stop instance, thrown into every task: its traceback is
            # cleared each time so it does not collect the frames of all of them.
            gate.stopped = stopped = violation
            error = violation.with_traceback(None)
    try:
        return coro.send(value) if error is None else coro.throw(error)
    except StopIteration as done:
        if stopped is not None:
            raise stopped.with_traceback(None) from None
        return _Done(done.value)


def _check(gate: Gate) -> GovernanceViolation | None:
    run, gov = gate.run, gate.gov
    now = monotonic()
    if (
        run.stop is None
        and gate.epoch == gov.epoch
        and now < gate.lease.deadline
        and now < gov.watchdog_deadline
    ):
        return None
    return run.failed_check(gate)


def _abandon(
    coro: Coroutine[Any, Any, Any], gate: Gate, stopped: GovernanceViolation | None
) -> NoReturn:
    """End a task whose cleanup outlived the grace: it is not resumed again."""
    gate.run.note_uncooperative(
        gate, "was still running when the cleanup grace ended; it was abandoned"
    )
    _entomb(coro)
    if stopped is not None:
        raise stopped.with_traceback(None)
    raise anyio.get_cancelled_exc_class()(f"{gate.task} abandoned after the cleanup grace")


def _entomb(coro: Coroutine[Any, Any, Any]) -> None:
    # One deliberately leaked reference: the coroutine is never deallocated, so neither
    # the garbage collector nor interpreter shutdown ever finalizes (resumes) it.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(coro))

"""A run's state, its evidence, and the fail-closed stop.

A run is built in layers, one module each: this one (state, evidence, the stop and its
cleanup grace), :mod:`._checks` (the per-resumption checks and policy re-decisions),
:mod:`._records` (how steps are written to the ledger), :mod:`._decide` (deciding a new
step), :mod:`._steps` (running it) and :mod:`._run` (the lifecycle, renewals, revocation).

Invariants:

- The first stop wins: :meth:`RunState.fail` records the violation, cancels the run's
  cancel scope (level-triggered, so sleeping tasks wake at once) and every later gate check
  sees it synchronously. ``handle.result()`` raises that first violation.
- A stop opens the cleanup grace: its tasks may unwind until ``cleanup_deadline``; then
  :meth:`RunState.enforce_grace` wakes every task still running so that its gate abandons
  it. Each stopped step's end is recorded as ``cleaned`` (it unwound within the grace) or
  ``abandoned`` (it was still running when the run ended).
- A record that cannot be written stops the run (``GovernanceUnavailable``) before the step
  it would have recorded starts.
- Run state is assigned only by the run itself: services stop it through :meth:`fail` or
  :meth:`breach`, never by writing its fields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...agents import Agent, Tool
from ...evidence._format import VIOLATION
from ...lineage._names import EVENT_VIOLATION, violation_event
from ._lease import wall_us
from ._state import LeaseState, Step

_INF = float("inf")

if TYPE_CHECKING:
    from ...evidence._attest import CodeItem
    from ...evidence._ledger import Ledger
    from ...lineage._spans import SpanHandle
    from ...policies import BudgetTracker
    from ._control import RunServices
    from ._gate import Gate

__all__ = ["RunState"]


class RunState:
    """State and control of one run: its evidence, and the stop."""

    def __init__(
        self,
        services: RunServices,
        *,
        run_id: str,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        principal: str,
        scopes: frozenset[str],
        ttl: float,
        ledger: Ledger,
        tracker: BudgetTracker,
        span: SpanHandle,
        attestation: str,
        code: Sequence[CodeItem],
    ) -> None:
        self.services = services
        self.gov = services.gov
        self.id = run_id
        self.agent = agent
        self.args = args
        self.kwargs = kwargs
        self.principal = principal
        self.scopes = scopes
        self.ttl = ttl
        # The run's lease clock: the wall time at start, advanced by the monotonic clock.
        # Every lease time of the run (iat, exp, the hard deadline) is on this one base, so a
        # wall-clock jump mid-run neither expires a renewal early nor extends the ttl.
        self._mono0 = monotonic()
        self._wall0_us = wall_us()
        self.hard_deadline = self._mono0 + ttl
        self.hard_deadline_us = self._wall0_us + int(ttl * 1e6)
        self.ledger = ledger
        # Record times on the run's clock too: a wall-clock jump mid-run then shifts no
        # timestamp against the leases it is checked against.
        ledger.clock = self.lease_clock_us
        # Checkpoints are fsynced and published off the loop: it never waits for the disk.
        ledger.background = self._in_background
        self.tracker = tracker
        self.span = span
        self.attestation = attestation
        self.code = code
        #: the agents and tools measured into the run's attestation (None: not checked)
        self.attested: frozenset[Any] | None = None
        #: writes the run's attestation file out at close (off the loop), when it has one
        self.write_attestation: Callable[[], object] | None = None
        self.stop: GovernanceViolation | None = None
        self.cancelled_reason: str | None = None
        self.validated_epoch = self.gov.epoch
        self.leases: dict[str, LeaseState] = {}
        self.steps: dict[str, Step] = {}
        self.scope: anyio.CancelScope | None = None
        # Scopes outside the run's own that its stop cancels too (foreign calls running in
        # tasks the run does not own; see ``_foreign``).
        self.cancel_scopes: set[anyio.CancelScope] = set()
        # The run's live fan-out task groups, in the order they began (see _cancel_scopes).
        self.groups: dict[anyio.CancelScope, None] = {}
        self.tg: TaskGroup | None = None
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._stop_applied = False
        # The cleanup grace (see the module docstring): set when the stop first lands.
        self.cleanup_deadline = _INF
        self._grace_enforced = False
        # The gates whose tasks are running now (the grace timer wakes them to abandon).
        self.gates: set[Gate] = set()
        # Steps unwound by the run's stop, by (error, message): recorded together in one
        # ``steps.stopped`` record per group when the run ends (see end_record).
        # (Their end times on the monotonic clock, put on the lease clock when recorded.)
        self._unwound: dict[tuple[str, str, str], tuple[list[str], list[float]]] = {}
        # The group of the run's stop instance itself, which most of them raise.
        self._stop_group: tuple[list[str], list[float]] | None = None

    @property
    def evidence_name(self) -> str:
        """The name of the run's evidence directory (its run id, or its segment's id)."""
        return self.ledger.run_dir.name

    def lease_clock_us(self) -> int:
        """Now on the run's lease clock (start wall time + monotonic time elapsed), in µs."""
        return self._wall0_us + int((monotonic() - self._mono0) * 1e6)

    def lease_clock_of(self, times: list[float]) -> list[int]:
        """Monotonic times on the run's lease clock, in µs (as :meth:`lease_clock_us`)."""
        wall0, mono0 = self._wall0_us, self._mono0
        return [wall0 + int((t - mono0) * 1e6) for t in times]

    def blocking_hint(self) -> str:
        """Name a live synchronous tool running on the event loop, and the fix.

        Called from the stall detector's thread while the loop is blocked (so the steps do
        not change under it; a change mid-read gives no hint rather than a wrong one).
        """
        try:
            live = list(self.steps.values())
        except RuntimeError:
            return ""
        for step in reversed(live):
            target = step.target
            if isinstance(target, Tool) and not target.is_async and target.isolation == "none":
                return (
                    f"{target.qualified} is a synchronous tool running on the event loop: "
                    f'declare it @tool(isolation="thread") or @tool(isolation="process") so '
                    "that it runs off the loop and can be stopped"
                )
        return ""

    @property
    def busy(self) -> bool:
        """Whether governed steps are live (what the stall detector watches)."""
        return bool(self.steps)

    # -- evidence -------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
        owned: bool = False,
    ) -> int:
        """Append a ledger record; a failed append stops the run and raises.

        ``owned``: ``fields`` is handed to the ledger (see :meth:`Ledger.append`)."""
        s = span or self.span
        try:
            return self.ledger.append(
                kind, fields, trace=s.trace_id, span=s.span_id, flush=flush, owned=owned
            )
        except GovernanceUnavailable as exc:
            exc.run_id = exc.run_id or self.id
            self.fail(exc)
            raise (self.stop_error() if self.stop is not None else exc) from None

    def _in_background(self, job: Callable[[], None]) -> None:
        """Run a ledger job (a checkpoint's fsync and publication) in a worker thread; its
        failure stops the run. Off the loop (no loop in this thread) it runs here."""
        try:
            future = asyncio.get_running_loop().run_in_executor(None, job)
        except RuntimeError:  # no loop in this thread, or its executor was shut down
            job()
            return
        future.add_done_callback(self._background_done)

    def _background_done(self, done: asyncio.Future[None]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None or self.ledger.closed:
            return  # closed: the ledger's commit raises the failure itself
        if not isinstance(exc, GovernanceUnavailable):
            exc = GovernanceUnavailable(
                f"evidence ledger unavailable: checkpoint publication failed: {exc!r}",
                check="ledger.checkpoint",
                source="ledger",
            )
        exc.run_id = exc.run_id or self.id
        self.fail(exc)

    def try_record(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Append a record on a path that is already stopping: the stop is the outcome."""
        if self.ledger.failed:
            return
        with contextlib.suppress(GovernanceViolation):
            self.record(kind, fields, span, flush=flush)

    # -- stopping -------------------------------------------------------------------------

    def fail(self, exc: GovernanceViolation) -> GovernanceViolation:
        """Stop the run fail closed with ``exc`` (the first stop wins) and return the stop."""
        if self.stop is None:
            if exc.run_id is None:
                exc.run_id = self.id
            self.stop = exc
            self._open_grace()
        self.apply_stop()
        return self.stop_error()

    def breach(self, exc: GovernanceViolation) -> None:
        """Set the stop flag from another thread (the loop is blocked); see ``apply_stop``.

        Gates read the flag at the next resumption without the loop's help; the record
        and the scope cancellation follow in :meth:`apply_stop` once the loop turns.
        """
        if self.stop is None:
            if exc.run_id is None:
                exc.run_id = self.id
            self.stop = exc
            self._open_grace()

    def _open_grace(self) -> None:
        self.cleanup_deadline = monotonic() + self.services.config.cleanup_grace

    def enforce_grace(self, now: float) -> float | None:
        """Wake every task still running once the cleanup grace is over (watchdog timer).

        Returns the monotonic time at which to call again (``None``: nothing left to do).
        """
        if (self.stop is None and self.cancelled_reason is None) or self._grace_enforced:
            return None
        if not self.gates:
            return None
        if now < self.cleanup_deadline:
            return self.cleanup_deadline
        self._grace_enforced = True
        for gate in list(self.gates):
            gate.wake_to_abandon()
        return None

    def gate_started(self, gate: Gate) -> None:
        """A governed task began (see :func:`~._gate.governed`)."""
        self.gates.add(gate)

    def gate_ended(self, gate: Gate) -> None:
        """A governed task ended, or was abandoned."""
        self.gates.discard(gate)

    def stop_error(self) -> GovernanceViolation:
        """The run's stop, ready to raise again.

        Every task of a stopped run raises the same instance; each raise would prepend its
        frames to the instance's traceback, so that after 10,000 tasks it would hold (and
        keep alive) all their frames. Clearing it first keeps one task's worth.
        """
        assert self.stop is not None
        return self.stop.with_traceback(None)

    def apply_stop(self) -> None:
        """Record the stop, cancel the run scope and wake the watchdog (runs once)."""
        if self._stop_applied or self.stop is None:
            return
        self._stop_applied = True
        stop = self.stop
        fields = stop.to_record()
        self.span.event(EVENT_VIOLATION, violation_event(stop, fields))
        self.try_record(VIOLATION, fields)
        self._cancel_scopes()
        self.services.wake_watchdog()

    def _cancel_scopes(self) -> None:
        if self.scope is not None:
            # Delivered as the loop turns: anyio cancels every task of the scope one by one,
            # which at 10,000 tasks would hold the caller (``rt.revoke``) for tens of ms.
            # Nothing governed resumes meanwhile: every gate already sees ``self.stop``.
            asyncio.get_running_loop().call_soon(self._deliver_stop)
        for scope in self.cancel_scopes:  # foreign calls in tasks the run does not own: few
            scope.cancel()

    def _deliver_stop(self) -> None:
        # A task group whose host is cancelled from outside cancels its own scope as it
        # exits, and anyio then walks every task under it again, before most have unwound.
        # So each group's own scope is the one cancelled: the fan-outs' first (the latest
        # first: a nested one is inside those before it, whose walks then skip it), then
        # the run's task group. Each task is walked once, as in a bare task group.
        for group in reversed(list(self.groups)):
            group.cancel()
        scope = self.tg.cancel_scope if self.tg is not None else self.scope
        if scope is not None:
            scope.cancel()

    def cancel(self, reason: str) -> None:
        """Stop the run because its caller went away (not a governance violation)."""
        if self.stop is None and self.cancelled_reason is None:
            self.cancelled_reason = reason
            self._open_grace()
            if self.scope is not None:
                self.scope.cancel()
            for scope in self.cancel_scopes:
                scope.cancel()
            self.services.wake_watchdog()

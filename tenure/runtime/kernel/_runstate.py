"""A run's state, its evidence, and the fail-closed stop.

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
from collections.abc import Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ..._errors import (
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
)
from ...agents import Agent, Tool
from ...evidence._format import STEP_END, STEPS_STOPPED, VIOLATION
from ...lineage._names import EVENT_VIOLATION, violation_event
from ._lease import wall_us
from ._state import LeaseState, Step, value_digest

_INF = float("inf")

if TYPE_CHECKING:
    from ...evidence._attest import CodeItem
    from ...evidence._ledger import Ledger
    from ...lineage._spans import SpanHandle
    from ...policies import BudgetTracker, Decision, PolicySet
    from ._control import RunServices
    from ._gate import Gate

__all__ = ["RunState", "stands"]


class RunState:
    """State and control of one run: evidence, stop, and the per-resumption checks."""

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
        self.tracker = tracker
        self.span = span
        self.attestation = attestation
        self.code = code
        #: the agents and tools measured into the run's attestation (None: not checked)
        self.attested: frozenset[Any] | None = None
        self.stop: GovernanceViolation | None = None
        self.cancelled_reason: str | None = None
        self.validated_epoch = self.gov.epoch
        self.leases: dict[str, LeaseState] = {}
        self.steps: dict[str, Step] = {}
        self.scope: anyio.CancelScope | None = None
        # Scopes outside the run's own that its stop cancels too (foreign calls running in
        # tasks the run does not own; see ``_foreign``).
        self.cancel_scopes: set[anyio.CancelScope] = set()
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
        self._unwound: dict[tuple[str, str, str], tuple[list[str], list[int]]] = {}

    @property
    def evidence_name(self) -> str:
        """The name of the run's evidence directory (its run id, or its segment's id)."""
        return self.ledger.run_dir.name

    def lease_clock_us(self) -> int:
        """Now on the run's lease clock (start wall time + monotonic time elapsed), in µs."""
        return self._wall0_us + int((monotonic() - self._mono0) * 1e6)

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
    ) -> int:
        """Append a ledger record; a failed append stops the run and raises."""
        s = span or self.span
        try:
            return self.ledger.append(kind, fields, trace=s.trace_id, span=s.span_id, flush=flush)
        except GovernanceUnavailable as exc:
            exc.run_id = exc.run_id or self.id
            self.fail(exc)
            raise (self.stop_error() if self.stop is not None else exc) from None

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
        """A governed task began (see :class:`~._gate.Governed`)."""
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
            asyncio.get_running_loop().call_soon(self.scope.cancel)
        for scope in self.cancel_scopes:  # foreign calls in tasks the run does not own: few
            scope.cancel()

    def end_record(self, step: Step, error: BaseException | None, result: Any = None) -> None:
        if error is None:
            step.span.end(None)
            fields = {
                "step": step.id,
                "status": "ok",
                "result": value_digest(result),
                "error": "",
                "message": "",
            }
            self.record(STEP_END, fields, step.span, flush=False)
            return
        step.span.end(self.stop if self.stop is not None else error)
        message = _message(error)
        if self.stop is not None or self.cancelled_reason:
            # Thousands of tasks unwinding at once each note only their id and end time; one
            # ``steps.stopped`` record per (error, message) carries them all (record_stopped).
            self._note_stopped(step, type(error).__name__, message, "cleaned")
            return
        fields = {
            "step": step.id,
            "status": "error",
            "result": "",
            "error": type(error).__name__,
            "message": message,
        }
        self.try_record(STEP_END, fields, step.span, flush=False)

    def _note_stopped(self, step: Step, error: str, message: str, outcome: str) -> None:
        ids, ended = self._unwound.setdefault((error, message, outcome), ([], []))
        ids.append(step.id)
        ended.append(self.lease_clock_us())

    def record_stopped(self) -> None:
        """Write the ``steps.stopped`` records of the steps the stop ended (at run end).

        Steps still live now belonged to tasks abandoned after the cleanup grace (or that
        never got to unwind): their outcome is ``abandoned``; the others ``cleaned``.
        """
        why = self.stop if self.stop is not None else None
        for step in self.steps.values():
            step.span.end(why)
            error = type(why).__name__ if why is not None else "Cancelled"
            message = str(why)[:500] if why is not None else (self.cancelled_reason or "")
            self._note_stopped(step, error, message, "abandoned")
        self.steps.clear()
        for (error, message, outcome), (ids, ended) in self._unwound.items():
            self.try_record(
                STEPS_STOPPED,
                {
                    "error": error,
                    "message": message,
                    "outcome": outcome,
                    "steps": ids,
                    "ended": ended,
                },
                flush=False,
            )
        self._unwound.clear()

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

    # -- the per-resumption checks --------------------------------------------------------

    def failed_check(self, gate: Gate) -> GovernanceViolation | None:
        """Slow path of the check in :class:`Governed`: find what failed, or revalidate."""
        violation = self.check_lease(gate.lease, gate.task)
        if violation is None:
            gate.epoch = self.gov.epoch
        return violation

    def check_lease(self, lease: LeaseState, task: str) -> GovernanceViolation | None:
        """Every per-resumption condition for ``lease``; stops the run on the first failure."""
        if self.stop is not None:
            return self.stop
        if lease.revoked:
            return self.fail(
                LeaseRevoked(
                    "the lease was revoked",
                    lease_id=lease.id,
                    check="lease.revoked",
                    task=task,
                    source="gate",
                )
            )
        now = monotonic()
        if now >= lease.deadline:
            return self.fail(self._expired(lease, task, now))
        if now >= self.gov.control_deadline:
            return self.fail(
                GovernanceUnavailable(
                    "this process's control-plane lease was not renewed in time: the "
                    "governance backend stopped acknowledging it, so its authority ended "
                    "on its own clock",
                    lease_id=lease.id,
                    check="backend.liveness",
                    task=task,
                    source="gate",
                )
            )
        if now >= self.gov.watchdog_deadline:
            return self.fail(
                GovernanceUnavailable(
                    "the watchdog heartbeat is late: governance cannot be vouched for",
                    lease_id=lease.id,
                    check="watchdog.heartbeat",
                    task=task,
                    source="gate",
                )
            )
        if self.validated_epoch != self.gov.epoch:
            self.revalidate()
        return self.stop

    def _expired(self, lease: LeaseState, task: str, now: float) -> LeaseExpired:
        if now >= self.hard_deadline:
            return LeaseExpired(
                f"the run's ttl of {self.ttl:g}s is exhausted",
                lease_id=lease.id,
                check="run.ttl",
                task=task,
                source="gate",
            )
        return LeaseExpired(
            "the lease expired before it was renewed",
            lease_id=lease.id,
            check="lease.expiry",
            task=task,
            source="gate",
        )

    # -- decisions ------------------------------------------------------------------------

    def revalidate(self) -> None:
        """Re-decide every live step under the current policy set (after an epoch bump)."""
        if self.validated_epoch == self.gov.epoch or self.stop is not None:
            return
        policy = self.gov.policy
        for step in list(self.steps.values()):
            decision = self.redecide(policy, step)
            if decision is None:
                return
            if not stands(decision, step):
                self.fail(
                    PolicyDenied(
                        f"policy {policy.digest[:19]} no longer allows live step {step.id} "
                        f"({step.target.qualified}): {decision.reason}",
                        lease_id=step.lease.id,
                        check=f"rule:{decision.rule_id}",
                        task=step.target.qualified,
                        source="policy-reload",
                    )
                )
                return
        self.validated_epoch = self.gov.epoch

    def redecide(
        self, policy: PolicySet, step: Step, doing: str = "re-deciding live step"
    ) -> Decision | None:
        """Decide ``step``; a policy engine fault stops the run (``None`` is returned then).

        Never falls through to allow, and never raises: the watchdog calls it too.
        """
        try:
            args = step.bound_args() if policy.uses_args else None
            return policy.decide(self.principal, step.action, step.target.name, step.caller, args)
        except Exception as exc:
            self.fail(
                GovernanceUnavailable(
                    f"the policy engine failed while {doing} {step.id} "
                    f"({step.target.qualified}): {type(exc).__name__}: {exc}",
                    lease_id=step.lease.id,
                    check="policy.engine",
                    task=step.target.qualified,
                    source="policy",
                )
            )
            return None

    def note_uncooperative(self, gate: Gate, how: str) -> None:
        """Record that a task kept going after its stop (tried to act, or outran the grace)."""
        self.try_record(
            VIOLATION,
            {
                "error": "Uncooperative",
                "check": "task.uncooperative",
                "reason": f"{gate.task} {how}",
                "lease": gate.lease.id,
                "task": gate.task,
                "source": "gate",
            },
        )

    def ensure_live(self, caller: Step | None, gate: Gate | None = None, what: str = "") -> None:
        """Raise the stop (or the caller's failed check) before a new step starts.

        A task that was already told of the stop (``gate.stopped``) and still tries to act
        is recorded as uncooperative.
        """
        if self.stop is not None:
            if gate is not None and gate.stopped is not None:
                self.note_uncooperative(gate, f"tried to start {what} after the stop")
            raise self.stop_error()
        if self.cancelled_reason is not None:
            # The caller went away: no new step starts, even if an agent swallowed the
            # cancellation and tries to go on.
            raise anyio.get_cancelled_exc_class()(f"run {self.id}: {self.cancelled_reason}")
        if caller is not None:
            violation = self.check_lease(caller.lease, caller.target.qualified)
            if violation is not None:
                raise violation


def stands(decision: Decision, step: Step) -> bool:
    """Whether a live step may go on: allowed, or approval required and already granted."""
    return decision.effect == "allow" or (decision.effect == "require_approval" and step.approved)


def _message(error: BaseException) -> str:
    """``str(error)``, at most 500 characters; never raises (a step always gets its end)."""
    try:
        text = str(error)
    except Exception as exc:  # an exception whose __str__ raises still ends its step
        return f"<str() of the error raised {type(exc).__name__}>"
    return text[:500] if isinstance(text, str) else "<str() of the error is not a str>"

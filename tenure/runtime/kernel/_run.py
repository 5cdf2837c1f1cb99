"""One run: its leases, steps, budgets, evidence and the fail-closed stop.

Every agent invocation and tool call of a run goes through :meth:`Run.invoke_agent` or
:meth:`Run.call_tool`, which do, in this order and nothing else first:

1. refuse at once if the run is stopped or the caller's lease no longer holds;
2. check scopes, budgets and rate limits, and ask the policy for a decision;
3. record the decision (and the approval, if one was needed) in the ledger;
4. issue the child lease (agents), record the step start and flush it to the OS;
5. only then run the body, under a :class:`~tenure.runtime.kernel._gate.Governed` wrapper;
6. record how the step ended (result digest or error).

Invariants:

- The first stop wins: :meth:`Run.fail` records the violation, cancels the run's cancel
  scope (level-triggered, so sleeping tasks wake at once) and every later gate check sees
  it synchronously. ``handle.result()`` raises that first violation.
- A record that cannot be written stops the run (``GovernanceUnavailable``) before the step
  it would have recorded starts.
- A denial of a *new* step (policy rule, missing scope, refused approval) refuses that step
  with :class:`PolicyDenied` and is recorded; a broken *condition of running work* (lease
  revoked or expired, budget exceeded, policy reload denying a live step, attestation
  change, watchdog or ledger failure) stops the whole run.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ..._errors import (
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
)
from ...agents._decorators import Agent, Tool
from ...lineage._spans import SpanHandle
from ._gate import Gate, Governed
from ._lease import wall_us
from ._state import NO_LEASE, GovState, LeaseState, Step, value_digest

if TYPE_CHECKING:
    from ...evidence._attest import CodeItem
    from ...evidence._ledger import Ledger
    from ...policies import BudgetTracker, Decision, PolicySet
    from .._runtime import _Engine
    from ..services._approvals import Approvals

__all__ = ["Run"]

_YIELD_EVERY = 64  # governed steps between forced turns of the event loop


class Run:
    """State and control of one run (created and driven by the runtime)."""

    def __init__(
        self,
        engine: _Engine,
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
    ) -> None:
        self.engine = engine
        self.gov: GovState = engine.gov
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
        self.tracker = tracker
        self.span = span
        self.attestation = attestation
        self.stop: GovernanceViolation | None = None
        self.cancelled_reason: str | None = None
        self.validated_epoch = self.gov.epoch
        self.leases: dict[str, LeaseState] = {}
        self.steps: dict[str, Step] = {}
        self.scope: anyio.CancelScope | None = None
        self.tg: TaskGroup | None = None
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.code: Sequence[CodeItem] = ()
        # Steps unwound by the run's stop, by (error, message): recorded together in one
        # ``steps.stopped`` record per group when the run ends (see _end_record).
        self._unwound: dict[tuple[str, str], tuple[list[str], list[int]]] = {}
        self._stop_applied = False
        self._ids = itertools.count(1)

    def lease_clock_us(self) -> int:
        """Now on the run's lease clock (start wall time + monotonic time elapsed), in µs."""
        return self._wall0_us + int((monotonic() - self._mono0) * 1e6)

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

    def _record_quietly(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
    ) -> None:
        # Used on paths that are already stopping: the stop itself is the outcome.
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
        self.apply_stop()
        return self.stop_error()

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
        self.span.event("tenure.violation", stop.to_record())
        self._record_quietly("violation", stop.to_record())
        if self.scope is not None:
            self.scope.cancel()
        self.engine.wake_watchdog()

    def cancel(self, reason: str) -> None:
        """Stop the run because its caller went away (not a governance violation)."""
        if self.stop is None and self.cancelled_reason is None:
            self.cancelled_reason = reason
            if self.scope is not None:
                self.scope.cancel()

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

    def revalidate(self) -> None:
        """Re-decide every live step under the current policy set (after an epoch bump)."""
        if self.validated_epoch == self.gov.epoch or self.stop is not None:
            return
        policy = self.gov.policy
        for step in list(self.steps.values()):
            decision = self._redecide(policy, step)
            if decision is None:
                return
            if not _stands(decision, step):
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

    def note_uncooperative(self, gate: Gate, how: str) -> None:
        """Record that a task kept going after its stop (it will not be resumed)."""
        self._record_quietly(
            "violation",
            {
                "error": "Uncooperative",
                "check": "task.uncooperative",
                "reason": f"{gate.task} {how}; it was not resumed",
                "lease": gate.lease.id,
                "task": gate.task,
                "source": "gate",
            },
        )

    def ensure_live(self, caller: Step | None) -> None:
        """Raise the stop (or the caller's failed check) before a new step starts."""
        if self.stop is not None:
            raise self.stop_error()
        if self.cancelled_reason is not None:
            # The caller went away: no new step starts, even if an agent swallowed the
            # cancellation and tries to go on.
            raise anyio.get_cancelled_exc_class()(f"run {self.id}: {self.cancelled_reason}")
        if caller is not None:
            violation = self.check_lease(caller.lease, caller.target.qualified)
            if violation is not None:
                raise violation

    # -- decisions ------------------------------------------------------------------------

    def _decide(self, policy: PolicySet, step: Step) -> Decision:
        args = step.bound_args() if policy.uses_args else None
        return policy.decide(self.principal, step.action, step.target.name, step.caller, args)

    def _redecide(
        self, policy: PolicySet, step: Step, doing: str = "re-deciding live step"
    ) -> Decision | None:
        """Decide ``step``; a policy engine fault stops the run (``None`` is returned then).

        Never falls through to allow, and never raises: the watchdog calls it too.
        """
        try:
            return self._decide(policy, step)
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

    def _record_decision(
        self, step: Step, effect: str, rule: str, reason: str, span: SpanHandle, *, flush: bool
    ) -> int:
        return self.record(
            "decision",
            {
                "step": step.id,
                "lease": step.lease.id,
                "action": step.action,
                "target": step.target.name,
                "caller": step.caller or "",
                "effect": effect,
                "rule": rule,
                "reason": reason,
                "args": step.args_digest,
            },
            span,
            flush=flush,
        )

    def _over_budget(self, check: str, reason: str, step: Step) -> GovernanceViolation:
        return self.fail(
            PolicyDenied(
                reason,
                lease_id=step.lease.id,
                check=check,
                task=step.target.qualified,
                source="budget",
            )
        )

    async def _authorize(self, step: Step, missing_scopes: frozenset[str]) -> tuple[int, int]:
        """Decide, record, wait for an approval if needed; (decision, approval) indexes."""
        over = self.tracker.on_step(step.action, step.target.name, step.depth)
        if over is not None:
            raise self._over_budget(over[0], over[1], step)
        step.args_digest = value_digest([step.args, step.kwargs])
        if missing_scopes:
            missing = sorted(missing_scopes)
            effect, rule = "deny", f"scope.{missing[0]}"
            reason = (
                f"lease {step.lease.id} lacks scope(s) {missing} that "
                f"{step.target.qualified} requires"
            )
        else:
            decision = self._redecide(self.gov.policy, step, "deciding step")
            if decision is None:
                raise self.stop_error()
            effect, rule, reason = decision.effect, decision.rule_id, decision.reason
        step.rule = rule
        parent_span = step.parent.span if step.parent is not None else self.span
        parent_span.event(
            "tenure.decision", {"target": step.target.qualified, "effect": effect, "rule": rule}
        )
        index = self._record_decision(
            step, effect, rule, reason, parent_span, flush=effect != "allow"
        )
        if effect == "deny":
            raise PolicyDenied(
                f"{step.target.qualified} denied for principal {self.principal!r}: {reason}",
                run_id=self.id,
                lease_id=step.lease.id,
                check=rule if missing_scopes else f"rule:{rule}",
                task=step.target.qualified,
                source="policy",
            )
        if effect == "require_approval":
            approvals: Approvals = self.engine.approvals
            epoch = self.gov.epoch
            granted = await approvals.wait(self, step, rule)
            step.approved = True
            if self.gov.epoch != epoch:
                # A reload during the wait: the grant answered the old policy's question.
                self._recheck_after_reload(step, parent_span)
            return index, granted
        return index, -1

    def _recheck_after_reload(self, step: Step, parent_span: SpanHandle) -> None:
        decision = self._redecide(self.gov.policy, step)
        if decision is None:
            raise self.stop_error()
        if decision.effect != "deny":
            return
        self._record_decision(
            step, "deny", decision.rule_id, decision.reason, parent_span, flush=True
        )
        raise PolicyDenied(
            f"{step.target.qualified} denied for principal {self.principal!r} by the policy "
            f"reloaded while it waited for approval: {decision.reason}",
            run_id=self.id,
            lease_id=step.lease.id,
            check=f"rule:{decision.rule_id}",
            task=step.target.qualified,
            source="policy",
        )

    # -- steps ----------------------------------------------------------------------------

    def _new_step(
        self,
        action: str,
        target: Agent | Tool,
        parent: Step | None,
        lease: LeaseState,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Step:
        return Step(
            id=str(next(self._ids)),
            action=action,
            target=target,
            parent=parent,
            lease=lease,
            depth=parent.depth + (1 if action == "invoke_agent" else 0) if parent else 0,
            args=args,
            kwargs=kwargs,
            span=parent.span if parent else self.span,
            caller=parent.target.name if parent is not None else None,
        )

    def _enter(self, step: Step) -> None:
        over = self.tracker.enter()
        if over is not None:
            raise self._over_budget(over[0], over[1], step)
        self.steps[step.id] = step

    def _leave(self, step: Step) -> None:
        if self.steps.pop(step.id, None) is not None:
            self.tracker.leave()

    def _start_record(self, step: Step, decision: int, approval: int) -> None:
        self.record(
            "step.start",
            {
                "step": step.id,
                "lease": step.lease.id,
                "action": step.action,
                "target": step.target.name,
                "decision": decision,
                "approval": approval,
                "parent": step.parent.id if step.parent is not None else "",
                "depth": step.depth,
                "args": step.args_digest,
            },
            step.span,
        )

    def _end_record(self, step: Step, error: BaseException | None, result: Any = None) -> None:
        if error is None:
            step.span.end(None)
            fields = {
                "step": step.id,
                "status": "ok",
                "result": value_digest(result),
                "error": "",
                "message": "",
            }
            self.record("step.end", fields, step.span, flush=False)
            return
        step.span.end(self.stop if self.stop is not None else error)
        key = (type(error).__name__, str(error)[:500])
        if self.stop is not None or self.cancelled_reason:
            # Thousands of tasks unwinding at once each note only their id and end time; one
            # ``steps.stopped`` record per (error, message) carries them all (record_stopped).
            ids, ended = self._unwound.setdefault(key, ([], []))
            ids.append(step.id)
            ended.append(self.lease_clock_us())
            return
        fields = {
            "step": step.id,
            "status": "error",
            "result": "",
            "error": key[0],
            "message": key[1],
        }
        self._record_quietly("step.end", fields, step.span, flush=False)

    def record_stopped(self) -> None:
        """Write the ``steps.stopped`` records of the steps the stop unwound (at run end)."""
        for (error, message), (ids, ended) in self._unwound.items():
            self._record_quietly(
                "steps.stopped",
                {"error": error, "message": message, "steps": ids, "ended": ended},
                flush=False,
            )
        self._unwound.clear()

    async def invoke_agent(
        self,
        parent: Step | None,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scopes: frozenset[str] | None = None,
    ) -> Any:
        """Run ``agent`` as a governed child of ``parent`` (or as the root when ``None``)."""
        from ...agents._context import Context

        self.ensure_live(parent)
        engine = self.engine
        if parent is None:
            granted = self.scopes
            holder = None
        else:
            holder = parent.lease
            granted = holder.lease.scope_set & agent.scopes
            if scopes is not None:
                widened = scopes - holder.lease.scope_set
                if widened:
                    raise self.fail(
                        PolicyDenied(
                            f"delegation to {agent.qualified} asks for scope(s) {sorted(widened)} "
                            f"that the delegating lease does not hold",
                            lease_id=holder.id,
                            check="lease.narrowing",
                            task=agent.qualified,
                            source="delegate",
                        )
                    )
                granted &= scopes
        step = self._new_step(
            "invoke_agent",
            agent,
            parent,
            holder if holder is not None else self._placeholder_lease(),
            args,
            kwargs,
        )
        decision, approval = await self._authorize(step, frozenset())
        # The step's lease: issued only once the step is allowed.
        lease = self._issue_lease(step, holder, granted)
        self._enter(step)
        try:
            step.span = engine.lineage.start_agent(
                step.span,
                agent.name,
                run_id=self.id,
                step_id=step.id,
                lease_id=lease.id,
                principal=self.principal,
            )
            step.span.set_decision("approved" if step.approved else "allow", step.rule)
            step.span.event("tenure.lease.issued", {"lease": lease.id})
            self._start_record(step, decision, approval)
            lease.step = step
            gate = Gate(self, lease, agent.qualified)
            ctx = Context._create(self, step)
            try:
                body = (
                    agent.func(ctx, *args, **kwargs)
                    if agent.isolation == "none"
                    else engine.isolation.run_agent(self, step, agent, args, kwargs)
                )
                result = await Governed(body, gate)
            except BaseException as exc:
                self._end_record(step, exc)
                raise
            self._end_record(step, None, result)
            return result
        finally:
            lease.active = False
            self._leave(step)

    def _placeholder_lease(self) -> LeaseState:
        # The root step is decided before its lease exists; the decision names no lease.
        placeholder: LeaseState = NO_LEASE
        return placeholder

    def _issue_lease(
        self, step: Step, holder: LeaseState | None, granted: frozenset[str]
    ) -> LeaseState:
        engine = self.engine
        authority = engine.authority
        now_us = self.lease_clock_us()
        expires = now_us + int(engine.config.lease_seconds * 1e6)
        if holder is None:
            lease = authority.issue_root(
                run_id=self.id,
                principal=self.principal,
                subject=step.target.qualified,
                scopes=granted,
                expires_us=expires,
                hard_deadline_us=self.hard_deadline_us,
                policy=self.gov.policy.digest,
                attestation=self.attestation,
                epoch=self.gov.epoch,
                now_us=now_us,
            )
        else:
            lease = authority.issue_child(
                holder.lease,
                subject=step.target.qualified,
                scopes=granted,
                expires_us=expires,
                now_us=now_us,
            )
        state = LeaseState(lease, holder, self.hard_deadline, now_us)
        self.leases[lease.id] = state
        step.lease = state
        c = lease.claims
        self.record(
            "lease.issued",
            {
                "lease": c.lid,
                "parent": c.parent_lid or "",
                "subject": c.sub,
                "scopes": list(c.scopes),
                "exp": c.exp,
                "envelope": lease.envelope,
            },
            flush=False,
        )
        return state

    async def call_tool(
        self, caller: Step, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Call ``tool`` for the agent step ``caller``, under the caller's lease."""
        self.ensure_live(caller)
        step = self._new_step("execute_tool", tool, caller, caller.lease, args, kwargs)
        if int(step.id) % _YIELD_EVERY == 0:
            # Tools that never await would otherwise keep the loop (and so the watchdog and
            # every other run) waiting for as long as the chain of calls lasts.
            await anyio.lowlevel.checkpoint()
        missing = tool.scopes - caller.lease.lease.scope_set
        decision, approval = await self._authorize(step, missing)
        self._enter(step)
        try:
            step.span = self.engine.lineage.start_tool(
                caller.span,
                tool.name,
                run_id=self.id,
                call_id=step.id,
                lease_id=caller.lease.id,
                principal=self.principal,
            )
            step.span.set_decision("approved" if step.approved else "allow", step.rule)
            self._start_record(step, decision, approval)
            try:
                if tool.is_async:
                    result = await tool.func(*args, **kwargs)
                else:
                    result = await self.engine.isolation.call(self, step, tool, args, kwargs)
            except BaseException as exc:
                self._end_record(step, exc)
                raise
            if self.stop is not None:
                # A result that arrives after the stop is discarded, not returned.
                self._end_record(step, self.stop)
                raise self.stop_error()
            self._end_record(step, None, result)
            return result
        finally:
            self._leave(step)

    def spawn(self, fn: Any, *args: Any) -> None:
        """Start a task in the run's task group (inside the run's cancel scope)."""
        if self.tg is None:
            raise RuntimeError(f"run {self.id} is not running")
        self.tg.start_soon(fn, *args)

    def record_usage(self, step: Step, tokens: int, cost: float) -> None:
        """Count usage; exceeding the token or cost budget stops the run."""
        self.ensure_live(step)
        over = self.tracker.record_usage(tokens, cost)
        self._record_quietly(
            "usage",
            {"step": step.id, "tokens": tokens, "cost_micros": round(cost * 1e6)},
            step.span,
        )
        if over is not None:
            raise self._over_budget(over[0], over[1], step)

    # -- watchdog duties ------------------------------------------------------------------

    def watchdog_pass(self, now: float) -> None:
        """Renew leases that are still allowed; check ttl and wall-time budget."""
        if self.stop is not None:
            return
        over = self.tracker.check_wall(now)
        if over is not None:
            self.fail(PolicyDenied(over[1], check=over[0], source="watchdog"))
            return
        self.revalidate()
        if self.stop is not None:
            return
        cfg = self.engine.config
        threshold = cfg.lease_seconds * cfg.renew_fraction
        for state in sorted(self.leases.values(), key=lambda s: s.lease.claims.depth):
            if not state.active or state.revoked:
                continue
            if state.deadline - now > threshold or state.deadline >= self.hard_deadline:
                continue
            self._renew(state)
            if self.stop is not None:
                return

    def _renew(self, state: LeaseState) -> None:
        step = state.step
        if step is not None:
            decision = self._redecide(self.gov.policy, step)
            if decision is None:
                return
            if not _stands(decision, step):
                self.fail(
                    PolicyDenied(
                        f"renewal refused: {decision.reason}",
                        lease_id=state.id,
                        check=f"rule:{decision.rule_id}",
                        task=step.target.qualified,
                        source="watchdog",
                    )
                )
                return
        engine = self.engine
        now_us = self.lease_clock_us()
        try:
            lease = engine.authority.renew(
                state.lease,
                expires_us=now_us + int(engine.config.lease_seconds * 1e6),
                hard_deadline_us=self.hard_deadline_us,
                parent=state.parent.lease if state.parent is not None else None,
                policy=self.gov.policy.digest,
                epoch=self.gov.epoch,
                now_us=now_us,
            )
        except GovernanceViolation as exc:
            exc.run_id = self.id
            self.fail(exc)
            return
        state.adopt(lease, self.hard_deadline, now_us)
        span = step.span if step is not None else self.span
        span.event("tenure.lease.renewed", {"lease": state.id, "gen": lease.claims.gen})
        try:
            self.record(
                "lease.renewed",
                {"lease": state.id, "exp": lease.claims.exp, "envelope": lease.envelope},
                span,
            )
        except GovernanceViolation:
            return

    def revoke_lease(self, lease_id: str, reason: str, by: str) -> None:
        """Revoke a lease and its descendants; the run stops (fail closed)."""
        cascade = self.engine.authority.revoke(lease_id)
        for lid in cascade:
            state = self.leases.get(lid)
            if state is not None:
                state.revoked = True
        self._record_quietly(
            "lease.revoked", {"lease": lease_id, "reason": reason, "by": by, "cascade": cascade}
        )
        self.span.event("tenure.lease.revoked", {"lease": lease_id, "reason": reason})
        state = self.leases.get(lease_id)
        task = state.lease.claims.sub if state is not None else None
        self.fail(
            LeaseRevoked(
                f"revoked: {reason}", lease_id=lease_id, check="lease.revoked", task=task, source=by
            )
        )


def _stands(decision: Decision, step: Step) -> bool:
    """Whether a live step may go on: allowed, or approval required and already granted."""
    return decision.effect == "allow" or (decision.effect == "require_approval" and step.approved)

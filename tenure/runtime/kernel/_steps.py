"""The governed step: how every agent invocation and tool call of a run is let through.

Every agent invocation and tool call goes through :meth:`GovernedSteps.invoke_agent` or
:meth:`GovernedSteps.call_tool`, which do, in this order and nothing else first:

1. refuse at once if the run is stopped or the caller's lease no longer holds;
2. check scopes, budgets and rate limits, and ask the policy for a decision;
3. record the decision (and the approval, if one was needed) in the ledger;
4. issue the child lease (agents), record the step start and flush it to the OS;
5. only then run the body, under a :class:`~tenure.runtime.kernel._gate.Governed` wrapper;
6. record how the step ended (result digest or error).

A denial of a *new* step (policy rule, missing scope, refused approval) refuses that step
with :class:`PolicyDenied` and is recorded; a broken *condition of running work* (lease
revoked or expired, budget exceeded, policy reload denying a live step, attestation change,
watchdog or ledger failure) stops the whole run.

An agent body reaches its run only through the :class:`_AgentPort` it is given (the
``StepPort`` that :class:`~tenure.Context` is written against).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import anyio

from ..._errors import GovernanceViolation, PolicyDenied
from ...agents import Agent, Context, ModelCall, Tool
from ...agents._context import current_step_context
from ...crypto._snapshot import NotCanonical, snapshot_call
from ...evidence._format import DECISION, LEASE_ISSUED, STEP_START, USAGE
from ...lineage._names import EVENT_DECISION, EVENT_LEASE_ISSUED, decision_event, lease_event
from ...lineage._spans import SpanHandle
from ._foreign import ForeignCalls, Usage
from ._gate import Gate, Governed
from ._lease import Lease
from ._runstate import RunState
from ._state import NO_LEASE, ForeignTarget, LeaseState, Step, value_digest
from ._stream import ToolStream

__all__ = ["GovernedSteps", "first_error"]

#: the check (and rule) of a deny for arguments without a canonical form
ARGS_CHECK = "args.canonical"
#: the check (and rule) of a deny for an agent or tool created after the run started
UNATTESTED_CHECK = "attestation.unattested"

T = TypeVar("T")


class GovernedSteps(RunState):
    """The step layer of a run (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids = itertools.count(1)
        self.foreign = ForeignCalls(self)

    def _record_decision(
        self, step: Step, effect: str, rule: str, reason: str, span: SpanHandle, *, flush: bool
    ) -> int:
        return self.record(
            DECISION,
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
                **_call_fields(step),
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
        # Another framework's tool or a model is not Tenure code: nothing to measure.
        foreign = isinstance(step.target, ForeignTarget)
        if self.attested is not None and not foreign and step.target not in self.attested:
            self._refuse_unattested(step)
        try:
            # Once, before deciding: the decision, the digest and the body all use it.
            snap = step.snapshot = snapshot_call(
                step.args, step.kwargs, opaque=step.action == "invoke_agent"
            )
        except NotCanonical as exc:
            step.args_digest = value_digest([step.args, step.kwargs])
            self._refuse_arguments(step, exc)
        step.args, step.kwargs = snap.args, snap.kwargs
        step.args_digest = value_digest(snap.value())
        if missing_scopes:
            missing = sorted(missing_scopes)
            effect, rule = "deny", f"scope.{missing[0]}"
            reason = (
                f"lease {step.lease.id} lacks scope(s) {missing} that "
                f"{step.target.qualified} requires"
            )
        else:
            decision = self.redecide(self.gov.policy, step, "deciding step")
            if decision is None:
                raise self.stop_error()
            effect, rule, reason = decision.effect, decision.rule_id, decision.reason
        step.rule = rule
        parent_span = step.parent.span if step.parent is not None else self.span
        parent_span.event(EVENT_DECISION, decision_event(step.target.qualified, effect, rule))
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
            epoch = self.gov.epoch
            granted = await self.services.approvals.wait(self, step, rule)
            step.approved = True
            if self.gov.epoch != epoch:
                # A reload during the wait: the grant answered the old policy's question.
                self._recheck_after_reload(step, parent_span)
            return index, granted
        return index, -1

    def _refuse_unattested(self, step: Step) -> NoReturn:
        """Deny a target created after the run started: its code is not in the attestation.

        (Model-written source turned into a tool mid-run would otherwise run unmeasured.)
        """
        step.args_digest = value_digest([step.args, step.kwargs])
        reason = (
            f"{step.target.qualified} was created after the run started, so its code is not "
            "in the run's attestation; define agents and tools before starting the run"
        )
        parent_span = step.parent.span if step.parent is not None else self.span
        step.rule = UNATTESTED_CHECK
        self._record_decision(step, "deny", UNATTESTED_CHECK, reason, parent_span, flush=True)
        raise PolicyDenied(
            reason,
            run_id=self.id,
            lease_id=step.lease.id,
            check=UNATTESTED_CHECK,
            task=step.target.qualified,
            source="attestation",
        )

    def _refuse_arguments(self, step: Step, exc: NotCanonical) -> NoReturn:
        """Deny a step whose arguments have no canonical form (recorded like any deny)."""
        parent_span = step.parent.span if step.parent is not None else self.span
        step.rule = ARGS_CHECK
        self._record_decision(step, "deny", ARGS_CHECK, str(exc), parent_span, flush=True)
        raise PolicyDenied(
            f"{step.target.qualified} denied for principal {self.principal!r}: {exc}",
            run_id=self.id,
            lease_id=step.lease.id,
            check=ARGS_CHECK,
            task=step.target.qualified,
            source="policy",
        )

    def _recheck_after_reload(self, step: Step, parent_span: SpanHandle) -> None:
        decision = self.redecide(self.gov.policy, step)
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

    def _new_step(
        self,
        action: str,
        target: Agent | Tool | ForeignTarget,
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

    def leave(self, step: Step) -> None:
        """A step ended: it is no longer live (nor counted against concurrency)."""
        if self.steps.pop(step.id, None) is not None:
            self.tracker.leave()
            if self.services.step_left is not None:
                self.services.step_left(self, step)

    def _start_fields(self, step: Step, decision: int, approval: int) -> dict[str, Any]:
        return {
            "step": step.id,
            "lease": step.lease.id,
            "action": step.action,
            "target": step.target.name,
            "decision": decision,
            "approval": approval,
            "parent": step.parent.id if step.parent is not None else "",
            "depth": step.depth,
            "args": step.args_digest,
            **_call_fields(step),
        }

    def _start_record(self, step: Step, decision: int, approval: int) -> None:
        self.record(STEP_START, self._start_fields(step, decision, approval), step.span)

    async def _start_shared(self, step: Step, decision: int, approval: int) -> None:
        """With a shared backend, the step's start is committed together with the step's
        debit of the run's budget (as every process of the run counts it) before the body
        runs; a refusal stops the run."""
        start = self.services.start_step
        assert start is not None
        await start(self, step, self._start_fields(step, decision, approval))

    async def invoke_agent(
        self,
        parent: Step | None,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scopes: frozenset[str] | None = None,
        pool: str | None = None,
        *,
        gate: Gate,
        fresh: bool = False,
    ) -> Any:
        """Run ``agent`` as a governed child of ``parent`` (or as the root when ``None``).

        ``gate`` is the gate of the calling task. With ``fresh`` the calling task exists for
        this step alone (a root or fan-out branch task): the body runs in it, under its gate
        rebound to the step's lease. Otherwise (``ctx.delegate``) the body gets a task of
        its own, so that a delegation chain costs one gate per resumption and one task's
        stack, whatever its depth.
        """
        self.ensure_live(parent, gate, agent.qualified)
        services = self.services
        if services.pacer.due():
            # Delegations and fan-out branches share the runtime's turns (see ``_pace``).
            await services.pacer.pace()
            self.ensure_live(parent, gate, agent.qualified)
        if pool is not None:
            # Refused before any decision: a call that cannot be sent is the caller's mistake.
            if services.remote is None:
                raise RuntimeError(
                    f"delegating {agent.qualified} to pool {pool!r} needs a Runtime with a "
                    "shared backend (Runtime(backend='postgresql://...') or TENURE_BACKEND)"
                )
            services.remote.check(agent, args, kwargs)
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
        step.pool = pool
        decision, approval = await self._authorize(step, frozenset())
        # The step's lease: issued only once the step is allowed.
        lease = self._issue_lease(step, holder, granted)
        self._enter(step)
        try:
            step.span = services.lineage.start_agent(
                step.span,
                agent.name,
                agent_id=f"{agent.__module__}.{agent.__qualname__}",
                run_id=self.id,
                step_id=step.id,
                lease_id=lease.id,
                principal=self.principal,
            )
            step.span.set_decision("approved" if step.approved else "allow", step.rule)
            step.span.event(EVENT_LEASE_ISSUED, lease_event(lease.id))
            if services.start_step is None:
                self._start_record(step, decision, approval)
            else:
                await self._start_shared(step, decision, approval)
            lease.step = step
            args, kwargs = _thawed(step)
            try:
                if fresh:
                    gate.bind(lease, agent.qualified)
                    with step.span.current():
                        result = await self._body(step, agent, gate, args, kwargs)
                else:
                    result = await self._in_own_task(step, agent, args, kwargs)
            except BaseException as exc:
                self.end_record(step, exc)
                raise
            self.end_record(step, None, result)
            return result
        finally:
            lease.active = False
            self.leave(step)
            self._release(lease)

    def _body(
        self,
        step: Step,
        agent: Agent,
        gate: Gate,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Coroutine[Any, Any, Any]:
        if step.pool is not None and self.services.remote is not None:
            return self.services.remote.run_agent(self, step, agent, args, kwargs)
        ctx = Context._create(_AgentPort(self, step, gate))
        if agent.isolation == "none":
            return _as_current(ctx, agent.func(ctx, *args, **kwargs))
        return _as_current(ctx, self.services.isolation.run_agent(self, step, agent, args, kwargs))

    async def _in_own_task(
        self, step: Step, agent: Agent, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a delegated agent's body in a task of its own and return its outcome."""
        outcome: list[Any] = []
        try:
            # The group lives in the delegating frame: cancelling the delegator (a stop, a
            # sibling's failure, the agent's own timeout) cancels the child, as anyio would.
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._own_task, step, agent, args, kwargs, outcome)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if not outcome:  # cancelled with the delegating frame, which raises that instead
            raise anyio.get_cancelled_exc_class()(f"{step.target.qualified} was cancelled")
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    def _release(self, lease: LeaseState) -> None:
        """A finished step's lease is no longer watched (its records are on disk)."""
        self.leases.pop(lease.id, None)
        self.services.authority.forget(lease.lease)

    async def _own_task(
        self,
        step: Step,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        outcome: list[Any],
    ) -> None:
        gate = Gate(self, step.lease, agent.qualified)
        try:
            with step.span.current():
                value = await Governed(self._body(step, agent, gate, args, kwargs), gate)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # handed to the delegating frame, raised there as is
            outcome.append((False, exc))
        else:
            outcome.append((True, value))

    def _placeholder_lease(self) -> LeaseState:
        # The root step is decided before its lease exists; the decision names no lease.
        placeholder: LeaseState = NO_LEASE
        return placeholder

    def _issue_lease(
        self, step: Step, holder: LeaseState | None, granted: frozenset[str]
    ) -> LeaseState:
        services = self.services
        authority = services.authority
        now_us = self.lease_clock_us()
        expires = now_us + int(services.config.lease_seconds * 1e6)
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
            LEASE_ISSUED,
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
        self,
        caller: Step,
        tool: Tool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        gate: Gate,
    ) -> Any:
        """Call ``tool`` for the agent step ``caller``, under the caller's lease."""
        self.ensure_live(caller, gate, tool.qualified)
        pacer = self.services.pacer
        if pacer.due():
            # A chain of tool calls that never await would otherwise keep the loop (the
            # watchdog, every other run) waiting for as long as it lasts.
            await pacer.pace(continuing=True)
            self.ensure_live(caller, gate, tool.qualified)
        step = self._new_step("execute_tool", tool, caller, caller.lease, args, kwargs)
        missing = tool.scopes - caller.lease.lease.scope_set
        decision, approval = await self._authorize(step, missing)
        self._enter(step)
        streaming = False
        try:
            step.span = self.services.lineage.start_tool(
                caller.span,
                tool.name,
                run_id=self.id,
                call_id=step.id,
                lease_id=caller.lease.id,
                principal=self.principal,
            )
            step.span.set_decision("approved" if step.approved else "allow", step.rule)
            if self.services.start_step is None:
                self._start_record(step, decision, approval)
            else:
                await self._start_shared(step, decision, approval)
            # Fresh objects built from the snapshot: whatever changed the caller's objects
            # since the decision (or the approval) changes nothing that runs.
            args, kwargs = _thawed(step)
            if tool.is_stream:
                # Decided and recorded; the generator is driven item by item by the caller.
                with step.span.current():
                    agen = tool.func(*args, **kwargs)
                streaming = True
                return ToolStream(self, caller, step, agen, gate)
            current = current_step_context.set(Context._create(_AgentPort(self, step, gate)))
            try:
                with step.span.current():
                    result = await self._tool_body(step, tool, args, kwargs)
            except BaseException as exc:
                self.end_record(step, exc)
                raise
            finally:
                current_step_context.reset(current)
            if self.stop is not None:
                # A result that arrives after the stop is discarded, not returned.
                self.end_record(step, self.stop)
                raise self.stop_error()
            self.end_record(step, None, result)
            return result
        finally:
            if not streaming:
                self.leave(step)

    async def _tool_body(
        self, step: Step, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not tool.is_async:
            return await self.services.isolation.call(self, step, tool, args, kwargs)
        if tool.timeout is None:
            return await tool.func(*args, **kwargs)
        with anyio.fail_after(tool.timeout):
            return await tool.func(*args, **kwargs)

    def spawn(self, fn: Any, *args: Any) -> None:
        """Start a task in the run's task group (inside the run's cancel scope)."""
        if self.tg is None:
            raise RuntimeError(f"run {self.id} is not running")
        self.tg.start_soon(fn, *args)

    def record_usage(self, step: Step, usage: Usage) -> None:
        """Record and count usage; exceeding the token or cost budget stops the run."""
        over = self.tracker.record_usage(usage.tokens, usage.cost)
        self.try_record(
            USAGE,
            {
                "step": step.id,
                "tokens": usage.tokens,
                "cost_micros": round(usage.cost * 1e6),
                "model": usage.model,
                "provider": usage.provider,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            },
            step.span,
        )
        if over is not None:
            raise self._over_budget(over[0], over[1], step)


def _thawed(step: Step) -> tuple[tuple[Any, ...], dict[str, Any]]:
    assert step.snapshot is not None  # taken by _authorize before any step may start
    return step.snapshot.thaw()


class _AgentPort:
    """What one agent step's :class:`~tenure.Context` may ask of its run.

    ``gate`` is the gate of the task the agent's body runs in.
    """

    __slots__ = ("_gate", "_run", "_step")

    def __init__(self, run: GovernedSteps, step: Step, gate: Gate) -> None:
        self._run = run
        self._step = step
        self._gate = gate

    @property
    def run_id(self) -> str:
        return self._run.id

    @property
    def principal(self) -> str:
        return self._run.principal

    @property
    def lease(self) -> Lease:
        return self._step.lease.lease

    def trace_carrier(self) -> dict[str, str]:
        return self._run.services.lineage.carrier(self._step.span)

    async def call_tool(self, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self._run.call_tool(self._step, tool, args, kwargs, self._gate)

    async def invoke_agent(
        self,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scopes: frozenset[str] | None,
        pool: str | None = None,
    ) -> Any:
        run, step = self._run, self._step
        return await run.invoke_agent(step, agent, args, kwargs, scopes, pool, gate=self._gate)

    def branch(
        self,
        target: Agent | Tool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pool: str | None = None,
    ) -> Awaitable[Any]:
        run, step = self._run, self._step
        # The branch's task runs this one wrapper: the step's decision under the caller's
        # lease, then (an agent) its body under its own lease, in the same task.
        gate = Gate(run, step.lease, target.qualified)
        body = (
            run.call_tool(step, target, args, kwargs, gate)
            if isinstance(target, Tool)
            else run.invoke_agent(step, target, args, kwargs, None, pool, gate=gate, fresh=True)
        )
        return Governed(body, gate)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._run.spawn(fn)

    def stopped(self) -> BaseException | None:
        return self._run.stop_error() if self._run.stop is not None else None

    def record_usage(
        self,
        tokens: int | None,
        cost: float,
        *,
        model: str,
        provider: str,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        self._run.foreign.report_usage(
            self._step,
            tokens=tokens,
            cost=cost,
            model=model,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    async def govern(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        body: Callable[[], Awaitable[T]],
        *,
        call_id: str | None,
        framework: str,
        scopes: frozenset[str],
        tool_type: str,
    ) -> T:
        return await self._run.foreign.govern(
            self._step,
            name,
            args,
            body,
            call_id=call_id,
            framework=framework,
            scopes=scopes,
            tool_type=tool_type,
        )

    def govern_sync(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        body: Callable[[], T],
        *,
        call_id: str | None,
        framework: str,
        scopes: frozenset[str],
        tool_type: str,
    ) -> T:
        return self._run.foreign.govern_sync(
            self._step,
            name,
            args,
            body,
            call_id=call_id,
            framework=framework,
            scopes=scopes,
            tool_type=tool_type,
        )

    def model_call(
        self, model: str, *, provider: str, call_id: str | None, max_tokens: int | None
    ) -> ModelCall:
        return self._run.foreign.model_call(
            self._step, model, provider=provider, call_id=call_id, max_tokens=max_tokens
        )


async def _as_current(ctx: Context, body: Coroutine[Any, Any, Any]) -> Any:
    """Run an agent's body with ``ctx`` as the current context (adapters find it there)."""
    token = current_step_context.set(ctx)
    try:
        return await body
    finally:
        current_step_context.reset(token)


def _call_fields(step: Step) -> dict[str, str]:
    """A foreign call's own id and framework, for its records (native steps have none)."""
    if not step.framework:
        return {}
    return {"call": step.call, "framework": step.framework}


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a task group's failure stands for: a violation first, then any
    error other than a cancellation, then the first leaf."""
    leaves = list(_leaves(group))
    cancelled = anyio.get_cancelled_exc_class()
    return (
        next((e for e in leaves if isinstance(e, GovernanceViolation)), None)
        or next((e for e in leaves if not isinstance(e, cancelled)), None)
        or leaves[0]
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e

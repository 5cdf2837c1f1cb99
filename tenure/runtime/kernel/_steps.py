"""The governed step: how every agent invocation and tool call of a run is let through.

Every agent invocation and tool call goes through :meth:`GovernedSteps.invoke_agent` or
:meth:`GovernedSteps.call_tool`, which do, in this order and nothing else first:

1. refuse at once if the run is stopped or the caller's lease no longer holds;
2. decide (budgets, attestation, canonical arguments, scopes, policy, approval:
   :mod:`._decide`); a denial is recorded and refuses the step;
3. an agent gets its lease (:mod:`._issue`: signed in a batch before it is handed out);
4. record the step's start (carrying an outright allow) and hand it to the OS;
5. only then run the body, under a :func:`~tenure.runtime.kernel._gate.governed` wrapper;
6. record how the step ended (result digest or error).

A denial of a *new* step (policy rule, missing scope, refused approval) refuses that step
with :class:`PolicyDenied` and is recorded; a broken *condition of running work* (lease
revoked or expired, budget exceeded, policy reload denying a live step, attestation change,
watchdog or ledger failure) stops the whole run.
"""

from __future__ import annotations

import itertools
from collections.abc import Coroutine, Iterator
from typing import Any

import anyio

from ..._errors import GovernanceViolation, PolicyDenied
from ...agents import Agent, Context, Tool
from ...agents._context import current_step_context
from ...evidence._format import USAGE
from ...lineage._names import EVENT_LEASE_ISSUED, lease_event
from ._decide import StepDecisions
from ._foreign import ForeignCalls, Usage
from ._gate import Gate, governed
from ._issue import LeaseIssuer
from ._port import AgentPort, as_current
from ._state import NO_LEASE, ForeignTarget, LeaseState, Step
from ._stream import ToolStream

__all__ = ["GovernedSteps", "first_error"]

_NO_SCOPES: frozenset[str] = frozenset()


class GovernedSteps(StepDecisions):
    """The step layer of a run (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids = itertools.count(1)
        self.foreign = ForeignCalls(self)
        self.issuer = LeaseIssuer(self)

    def new_step(
        self,
        action: str,
        target: Agent | Tool | ForeignTarget,
        parent: Step | None,
        lease: LeaseState,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Step:
        """A new step of this run (decided by :meth:`authorize` before anything runs)."""
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

    def enter(self, step: Step) -> None:
        """An allowed step becomes live (counted against concurrency)."""
        over = self.tracker.enter()
        if over is not None:
            raise self.over_budget(over[0], over[1], step)
        self.steps[step.id] = step

    def leave(self, step: Step) -> None:
        """A step ended: it is no longer live (nor counted against concurrency)."""
        if self.steps.pop(step.id, None) is not None:
            self.tracker.leave()
            if self.services.step_left is not None:
                self.services.step_left(self, step)

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
            granted = _narrowed(holder.lease.scope_set, agent.scopes)
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
                granted = _narrowed(granted, scopes)
        step = self.new_step(
            "invoke_agent", agent, parent, holder if holder is not None else NO_LEASE, args, kwargs
        )
        step.pool = pool
        approval = await self.authorize(step, frozenset())
        epoch = self.gov.epoch
        # The step's lease: issued only once the step is allowed (signed in the next turn's
        # batch; meanwhile a reload may have changed the policy the step was decided under).
        lease = await self.issuer.issue(step, holder, granted)
        try:
            if self.gov.epoch != epoch:
                self.recheck_after_reload(step)
            self.enter(step)
        except BaseException:  # refused after all: the lease is never used, nor watched
            lease.active = False
            self.issuer.release(lease)
            raise
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
            if step.span.is_recording:  # a light span has no attributes or events to set
                step.span.set_decision("approved" if step.approved else "allow", step.rule)
                step.span.event(EVENT_LEASE_ISSUED, lease_event(lease.id))
            await self.start(step, approval)  # recorded (and committed) before the body
            lease.step = step
            try:
                if fresh:
                    gate.bind(lease, agent.qualified)
                    result = await self._body(step, agent, gate)
                else:
                    result = await self._in_own_task(step, agent)
            except BaseException as exc:
                self.end_record(step, exc)
                raise
            self.end_record(step, None, result)
            return result
        finally:
            lease.active = False
            self.leave(step)
            self.issuer.release(lease)

    def _body(self, step: Step, agent: Agent, gate: Gate) -> Coroutine[Any, Any, Any]:
        """The agent's body, to be awaited in the task it runs in (which ends with it).

        The step's span and context become that task's current ones, set without a token
        to reset; the arguments are thawed here, after the step's start was recorded, and
        held by the body alone (no frame of the governed step keeps a copy).
        """
        step.span.make_current()
        args, kwargs = _thawed(step)
        if step.pool is not None and self.services.remote is not None:
            return self.services.remote.run_agent(self, step, agent, args, kwargs)
        ctx = Context._create(AgentPort(self, step, gate))
        if agent.isolation == "none":
            return as_current(ctx, agent.func(ctx, *args, **kwargs))
        return as_current(ctx, self.services.isolation.run_agent(self, step, agent, args, kwargs))

    async def _in_own_task(self, step: Step, agent: Agent) -> Any:
        """Run a delegated agent's body in a task of its own and return its outcome."""
        outcome: list[Any] = []
        try:
            # The group lives in the delegating frame: cancelling the delegator (a stop, a
            # sibling's failure, the agent's own timeout) cancels the child, as anyio would.
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._own_task, step, agent, outcome)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if not outcome:  # cancelled with the delegating frame, which raises that instead
            raise anyio.get_cancelled_exc_class()(f"{step.target.qualified} was cancelled")
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    async def _own_task(self, step: Step, agent: Agent, outcome: list[Any]) -> None:
        gate = Gate(self, step.lease, agent.qualified)
        try:
            value = await governed(self._body(step, agent, gate), gate)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # handed to the delegating frame, raised there as is
            outcome.append((False, exc))
        else:
            outcome.append((True, value))

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
        services = self.services
        pacer = services.pacer
        if pacer.due():
            # A chain of tool calls that never await would otherwise keep the loop (the
            # watchdog, every other run) waiting for as long as it lasts.
            await pacer.pace(continuing=True)
            self.ensure_live(caller, gate, tool.qualified)
        lease = caller.lease
        step = self.new_step("execute_tool", tool, caller, lease, args, kwargs)
        needed = tool.scopes
        # Sync where nothing waits (an outright allow, no shared backend): no coroutine of
        # its own for the decision nor for the start record.
        approval = (
            -1
            if self.decide(step, needed - lease.lease.scope_set if needed else _NO_SCOPES)
            else await self.approve(step)
        )
        self.enter(step)
        streaming = False
        try:
            step.span = services.lineage.start_tool(
                caller.span,
                tool.name,
                run_id=self.id,
                call_id=step.id,
                lease_id=lease.id,
                principal=self.principal,
            )
            step.span.set_decision("approved" if step.approved else "allow", step.rule)
            # Recorded (and committed) before the body.
            if services.start_step is None:
                self.start_record(step, approval)
            else:
                await self.start(step, approval)
            # Fresh objects built from the snapshot: whatever changed the caller's objects
            # since the decision (or the approval) changes nothing that runs.
            args, kwargs = _thawed(step)
            if tool.is_stream:
                # Decided and recorded; the generator is driven item by item by the caller.
                with step.span.current():
                    agen = tool.func(*args, **kwargs)
                streaming = True
                return ToolStream(self, caller, step, agen, gate)
            current = current_step_context.set(Context._create(AgentPort(self, step, gate)))
            try:
                with step.span.current():
                    if tool.is_async and tool.timeout is None:
                        result = await tool.func(*args, **kwargs)
                    else:
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
        """A synchronous tool (isolated) or one with a timeout (plain async ones are awaited
        in :meth:`call_tool` itself: one coroutine fewer per call)."""
        if not tool.is_async:
            return await self.services.isolation.call(self, step, tool, args, kwargs)
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
            raise self.over_budget(over[0], over[1], step)


def _narrowed(held: frozenset[str], wanted: frozenset[str]) -> frozenset[str]:
    """``held & wanted``, as one of the two sets when it equals one (the usual case).

    Every live agent's step keeps the scopes it was granted until it ends; a new set each
    (216 bytes even when empty) was a tracked object more per agent. Frozen sets are
    immutable, so sharing one shares no authority.
    """
    granted = held & wanted
    if len(granted) == len(wanted):  # a subset of each: equal sizes mean equal sets
        return wanted
    if len(granted) == len(held):
        return held
    return granted


def _thawed(step: Step) -> tuple[tuple[Any, ...], dict[str, Any]]:
    assert step.snapshot is not None  # taken by authorize before any step may start
    return step.snapshot.thaw()


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

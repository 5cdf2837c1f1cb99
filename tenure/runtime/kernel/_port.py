"""What an agent's :class:`~tenure.Context` reaches of its run: the ``StepPort`` of a step.

An agent body reaches its run only through the :class:`AgentPort` it is given (the
``StepPort`` that :class:`~tenure.Context` is written against): calls, delegations,
fan-out branches, usage and the adapters' seam, each going through the run's governed step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ...agents import Agent, Context, ModelCall, Tool
from ...agents._context import current_step_context
from ._gate import Gate, GateHost, governed

if TYPE_CHECKING:
    from anyio import CancelScope

    from ..._errors import GovernanceViolation
    from ._control import RunServices
    from ._foreign import ForeignCalls
    from ._lease import Lease
    from ._state import Step

__all__ = ["AgentPort", "PortHost", "as_current"]

T = TypeVar("T")


class PortHost(GateHost, Protocol):
    """The run as a port sees it (its step layer, ``_steps.GovernedSteps``)."""

    id: str
    principal: str
    services: RunServices
    foreign: ForeignCalls
    groups: dict[CancelScope, None]

    def stop_error(self) -> GovernanceViolation:
        """The run's stop, ready to raise."""
        ...

    def spawn(self, fn: Any, *args: Any) -> None:
        """Start a task in the run's task group."""
        ...

    def call_tool(
        self, caller: Step, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any], gate: Gate
    ) -> Coroutine[Any, Any, Any]:
        """Call ``tool`` for ``caller``."""
        ...

    def invoke_agent(
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
    ) -> Coroutine[Any, Any, Any]:
        """Run ``agent`` as a governed child of ``parent``."""
        ...


class AgentPort:
    """What one agent step's :class:`~tenure.Context` may ask of its run.

    ``gate`` is the gate of the task the agent's body runs in.
    """

    __slots__ = ("_gate", "_run", "_step")

    def __init__(self, run: PortHost, step: Step, gate: Gate) -> None:
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

    def call_tool(
        self, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        # The run's coroutine itself, not one awaiting it: one frame fewer per tool call.
        return self._run.call_tool(self._step, tool, args, kwargs, self._gate)

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
        return governed(body, gate)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._run.spawn(fn)

    def stopped(self) -> BaseException | None:
        return self._run.stop_error() if self._run.stop is not None else None

    def track_group(self, scope: CancelScope, live: bool) -> None:
        if live:
            self._run.groups[scope] = None
        else:
            self._run.groups.pop(scope, None)

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


def as_current(ctx: Context, body: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """Make ``ctx`` the current context (adapters find it there) of the task about to run
    ``body``, an agent's body; returns ``body``.

    Set, not set-and-reset around the body: an agent body always runs in a task of its own
    (a root or fan-out branch task, or a delegated agent's own task, see ``_steps``) that
    ends with its step, so the value is seen by that body and the task's own closing code,
    never by another step. No wrapper coroutine and token per live agent (memory, and two
    objects fewer for every pass of the garbage collector).
    """
    current_step_context.set(ctx)
    return body

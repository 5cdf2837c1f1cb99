"""What a :class:`~tenure.Context` may ask of the run it belongs to.

``agents/`` never imports the engine (not even for type checking): the runtime hands each
agent step an object satisfying :class:`StepPort`, and everything an agent can do goes
through it. The port is bound to one agent step, so it never has to be told which.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from anyio import CancelScope

    from ._calls import ModelCall
    from ._decorators import Agent, Tool

T = TypeVar("T")

__all__ = ["LeaseView", "StepPort"]


class LeaseView(Protocol):
    """The read-only face of a signed, verified lease."""

    @property
    def id(self) -> str:
        """The lease id (stable across renewals; also its revocation id)."""
        ...

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes the lease grants."""
        ...

    @property
    def expires_at_us(self) -> int:
        """Wall-clock expiry, microseconds since the epoch."""
        ...


class StepPort(Protocol):
    """One agent step's access to its run's governance."""

    @property
    def run_id(self) -> str:
        """The run id."""
        ...

    @property
    def principal(self) -> str:
        """Who authorized the run."""
        ...

    @property
    def lease(self) -> LeaseView:
        """The step's current lease."""
        ...

    def trace_carrier(self) -> dict[str, str]:
        """W3C trace-context headers naming the step's span."""
        ...

    async def call_tool(self, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A governed tool call under the step's lease."""
        ...

    async def invoke_agent(
        self,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scopes: frozenset[str] | None,
        pool: str | None = None,
    ) -> Any:
        """A governed child agent under a narrowed lease (run by a worker of ``pool``)."""
        ...

    def branch(
        self,
        target: Agent | Tool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pool: str | None = None,
    ) -> Awaitable[Any]:
        """A fan-out branch calling ``target``, gated like any task of the run."""
        ...

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn()`` as a task of the run (inside the run's cancel scope)."""
        ...

    def stopped(self) -> BaseException | None:
        """The run's stop, ready to raise, or ``None`` while it runs."""
        ...

    def track_group(self, scope: CancelScope, live: bool) -> None:
        """A fan-out's task group began (``live``) or ended.

        The run's stop cancels a live group's scope itself, before the run's own: a group
        whose host is cancelled from outside cancels its own scope as it exits, which would
        walk all its branches a second time.
        """
        ...

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
        """Record model usage and count it against the run's budgets (``tokens=None``: the
        sum of input and output)."""
        ...

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
        """A framework's tool call as a governed step of this one."""
        ...

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
        """:meth:`govern` from a worker thread, for sync frameworks."""
        ...

    def model_call(
        self, model: str, *, provider: str, call_id: str | None, max_tokens: int | None
    ) -> ModelCall:
        """A governed request to a model."""
        ...

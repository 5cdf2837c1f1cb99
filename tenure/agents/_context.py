"""The :class:`Context` an agent receives: its only way to act.

Every method goes through the run's governance (decision, evidence, lease). A context is
created by the runtime for one agent step (and one for each tool call, which the tool's body
reaches through :func:`current_context`); it has no public constructor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from .._checks import check_scopes, check_usage
from .._errors import GovernanceViolation
from .._util import NoPublicConstructor, final
from ._calls import ModelCall
from ._decorators import Agent, Tool
from ._ports import LeaseView, StepPort

__all__ = ["Context", "Parallel", "ParallelTask", "current_context", "current_step_context"]

T = TypeVar("T")

#: The context of the governed step running in this task (set by the runtime around every
#: agent body and tool body; copied into the tasks and worker threads started from there).
current_step_context: ContextVar[Context | None] = ContextVar("tenure_context", default=None)


def current_context() -> Context:
    """The :class:`Context` of the governed agent or tool running here.

    Framework adapters use it to govern the calls a framework makes on behalf of the agent
    that runs it. Inside a tool body it is the tool call's own context: calls made through
    it are children of the tool call, under the calling agent's lease.

    Raises:
        RuntimeError: no governed step is running in this task or thread (nothing runs
            ungoverned: an adapter refuses the call).
    """
    ctx = current_step_context.get()
    if ctx is None:
        raise RuntimeError(
            "no governed Tenure step is running here: run the framework inside an @agent "
            "or @tool (rt.run(...)), or pass the agent's ctx to the adapter"
        )
    return ctx


@final
class Context(metaclass=NoPublicConstructor):
    """What an agent may do: call tools, delegate, fan out, report usage.

    The runtime creates one per agent step; it has no public constructor.
    """

    __slots__ = ("_port",)

    def __init__(self, port: StepPort) -> None:
        self._port = port

    @property
    def run_id(self) -> str:
        """The id of the run this agent belongs to."""
        return self._port.run_id

    @property
    def principal(self) -> str:
        """Who authorized the run."""
        return self._port.principal

    @property
    def lease(self) -> LeaseView:
        """This agent's current (signed, verified) lease."""
        return self._port.lease

    @property
    def trace_carrier(self) -> dict[str, str]:
        """W3C trace-context headers for this agent's own outgoing calls."""
        return self._port.trace_carrier()

    def call(self, tool: Tool, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Call ``tool`` under this agent's lease: decided, recorded, then run (await it).

        Returns the run's own coroutine for the call rather than one awaiting it: one frame
        fewer per tool call. Nothing is decided or run until it is awaited.
        """
        if not isinstance(tool, Tool):
            raise TypeError(f"ctx.call expects a @tool, got {tool!r}")
        return self._port.call_tool(tool, args, kwargs)

    async def delegate(
        self,
        agent: Agent,
        /,
        *args: Any,
        scopes: Iterable[str] | None = None,
        on: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``agent`` as a child with a narrowed lease; returns its result.

        ``on="pool:NAME"`` runs it on a worker of that pool (``tenure worker``) through
        the runtime's shared backend; its arguments and result must then be JSON values or
        pydantic models.
        """
        if not isinstance(agent, Agent):
            raise TypeError(f"ctx.delegate expects an @agent, got {agent!r}")
        wanted = None if scopes is None else check_scopes(scopes, "delegate(scopes=...)")
        return await self._port.invoke_agent(agent, args, kwargs, wanted, pool_of(on))

    def parallel(self) -> Parallel:
        """Fan out: ``async with ctx.parallel() as p: p.start(...)``; ``p.results`` after."""
        return Parallel._create(self._port)

    def record_usage(
        self,
        tokens: int = 0,
        cost: float = 0.0,
        *,
        model: str = "",
        provider: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Record model usage and count it against the run's token and cost budgets.

        ``tokens`` is the total (by default ``input_tokens + output_tokens``). Counts must
        be non-negative integers and ``cost`` a finite number >= 0 (``TypeError`` /
        ``ValueError`` otherwise, before any counter is touched). Exceeding ``max_tokens``
        or ``max_cost`` stops the run. Calls made with :meth:`model_call` record their own.
        """
        total, spent = check_usage(tokens, cost)
        self._port.record_usage(
            total or None,
            spent,
            model=model,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    # -- calls made by other frameworks (the adapters' seam) ------------------------------

    @property
    def stop(self) -> GovernanceViolation | None:
        """The violation that stopped the run, or ``None`` while it may go on.

        An adapter that catches a :class:`~tenure.GovernanceViolation` from :meth:`govern`
        tells a refused call (``stop is None``: show the model the denial, go on) from a
        stopped run (end the framework's run and raise it).
        """
        stopped = self._port.stopped()
        return stopped if isinstance(stopped, GovernanceViolation) else None

    async def govern(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        body: Callable[[], Awaitable[T]],
        /,
        *,
        call_id: str | None = None,
        framework: str = "",
        scopes: Iterable[str] = (),
        tool_type: str = "function",
    ) -> T:
        """Run a framework's tool call ``name(**args)`` as a governed step of this one.

        Decided (scopes, budgets, policy, approval) and recorded before ``body()`` is
        awaited; the body runs in a cancel scope the run's stop cancels, under the step's
        span (itself under the framework's current span); how it ends is recorded.

        Args:
            name: the tool's name, matched by the policy's ``targets``.
            args: its arguments by name (what ``when`` conditions see).
            body: runs the tool; awaited at most once, and only when allowed.
            call_id: the framework's tool-call id: re-entering a call id that completed
                (or was denied) returns that outcome without running anything again.
            framework: who calls (``"mcp"``, ``"langgraph"``, ...), for the evidence.
            scopes: the scopes this tool needs from the lease.
            tool_type: ``gen_ai.tool.type`` (``"function"``, ``"extension"``, ...).

        Raises:
            PolicyDenied: the call was refused (then ``self.stop is None``).
            GovernanceViolation: the run stopped before or while the body ran.
        """
        return await self._port.govern(
            name,
            args,
            body,
            call_id=call_id,
            framework=framework,
            scopes=check_scopes(scopes),
            tool_type=tool_type,
        )

    def govern_sync(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        body: Callable[[], T],
        /,
        *,
        call_id: str | None = None,
        framework: str = "",
        scopes: Iterable[str] = (),
        tool_type: str = "function",
    ) -> T:
        """:meth:`govern` for sync frameworks, from a worker thread (never the loop's).

        A sync body cannot be interrupted: if the run stops while it runs, what it returns
        is discarded and the stop is raised.
        """
        return self._port.govern_sync(
            name,
            args,
            body,
            call_id=call_id,
            framework=framework,
            scopes=check_scopes(scopes),
            tool_type=tool_type,
        )

    def model_call(
        self,
        model: str,
        /,
        *,
        provider: str = "",
        call_id: str | None = None,
        max_tokens: int | None = None,
    ) -> ModelCall:
        """A governed request to ``model``: ``async with ctx.model_call("gpt-4.1") as m:``.

        ``max_tokens`` (the request's output limit, if it sets one) is what the token budget
        must still have room for: a call it has no room for stops the run before anything
        is sent. ``provider`` becomes ``gen_ai.provider.name`` (``"openai"``, ...).
        """
        return self._port.model_call(
            model, provider=provider, call_id=call_id, max_tokens=max_tokens
        )


_PENDING: Final = object()


@final
class ParallelTask(metaclass=NoPublicConstructor):
    """One branch of a :class:`Parallel` block (created by ``p.start``)."""

    __slots__ = ("_error", "_value", "target")

    def __init__(self, target: Agent | Tool) -> None:
        self.target = target
        self._value: Any = _PENDING
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """True once the branch finished (with a value or an error)."""
        return self._value is not _PENDING or self._error is not None

    def result(self) -> Any:
        """The branch's value; raises its error; ``RuntimeError`` if still running."""
        if self._error is not None:
            raise self._error
        if self._value is _PENDING:
            raise RuntimeError(f"branch {self.target.qualified} has not finished")
        return self._value


_BATCH: Final = 100  # branches started per loop turn: a wide fan-out never holds the loop
_TARGETS: Final = (Agent, Tool)  # a tuple: ``Agent | Tool`` builds a union per p.start


@final
class Parallel(metaclass=NoPublicConstructor):
    """A fan-out block: ``async with ctx.parallel() as p: p.start(...)``.

    Its branches run in one task group, hosted by a task of the run's task group (inside the
    run's cancel scope), never in the agent's own frame: the agent only waits on an event,
    so a stop thrown into the agent never has to unwind a task group there. The host starts
    branches at most ``_BATCH`` per loop turn, so the runtime's own work for a fan-out of
    thousands (decisions, leases, records) is spread over many short turns. On leaving the
    block normally it waits for every branch and raises the first error in start order; the
    first failing branch cancels its siblings (once, through the group's scope). If the
    block is left by an exception (for instance the run being stopped), it cancels the
    branches and does not wait. ``p.start`` outside the ``async with`` block is refused.
    """

    __slots__ = (
        "_cancelled",
        "_closed",
        "_done",
        "_entered",
        "_failed",
        "_pending",
        "_port",
        "_tasks",
        "_tg",
        "_wake",
    )

    _cancelled: type[BaseException]  # the backend's cancellation, set on entering the block

    def __init__(self, port: StepPort) -> None:
        self._port = port
        self._tasks: list[ParallelTask] = []
        self._pending: deque[_Branch] = deque()
        self._tg: TaskGroup | None = None
        self._entered = False
        self._closed = False
        self._wake = anyio.Event()
        self._done = anyio.Event()
        self._failed = False

    def start(
        self, target: Agent | Tool, /, *args: Any, on: str | None = None, **kwargs: Any
    ) -> ParallelTask:
        """Start a branch calling ``target`` (tool) or delegating to it (agent).

        ``on="pool:NAME"`` runs an agent branch on a worker of that pool.
        """
        if not self._entered:
            raise RuntimeError(
                "p.start outside its block: use `async with ctx.parallel() as p:` and call "
                "p.start inside it (the block is what waits for the branches)"
            )
        if self._closed:
            raise RuntimeError("p.start after the parallel block was left")
        if not isinstance(target, _TARGETS):
            raise TypeError(f"p.start expects an @agent or @tool, got {target!r}")
        pool = pool_of(on)
        if pool is not None and not isinstance(target, Agent):
            raise TypeError(f"p.start(on={on!r}) runs agents on a pool, not the tool {target!r}")
        task = ParallelTask._create(target)
        self._tasks.append(task)
        self._pending.append((task, args, kwargs, pool))
        self._wake.set()
        return task

    async def _host(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._port.track_group(tg.cancel_scope, True)
                pending = self._pending
                while True:
                    if self._failed:
                        pending.clear()
                    for _ in range(min(_BATCH, len(pending))):
                        tg.start_soon(self._drive, *pending.popleft())
                    if pending:
                        await anyio.lowlevel.checkpoint()
                    elif self._closed:
                        break
                    else:
                        await self._wake.wait()
                        self._wake = anyio.Event()
        finally:
            if self._tg is not None:
                self._port.track_group(self._tg.cancel_scope, False)
            self._tg = None
            self._done.set()

    async def _drive(
        self,
        task: ParallelTask,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pool: str | None,
    ) -> None:
        try:
            # Created here, not in start(): a branch cancelled before it runs leaves no
            # never-awaited coroutine behind.
            task._value = await self._port.branch(task.target, args, kwargs, pool)
        except BaseException as exc:  # kept for the block's owner, which re-raises it
            if isinstance(exc, self._cancelled):
                task._error = _Cancelled(f"branch {task.target.qualified} was cancelled")
                raise
            task._error = exc
            self._fail()

    def _fail(self) -> None:
        if not self._failed:
            self._failed = True
            self._wake.set()
            # A stopped run has cancelled the scope this group runs in already: cancelling
            # the group too would walk all its branches once more for nothing.
            if self._tg is not None and self._port.stopped() is None:
                self._tg.cancel_scope.cancel()

    @property
    def results(self) -> list[Any]:
        """Branch values in start order (after the block)."""
        return [t.result() for t in self._tasks]

    async def __aenter__(self) -> Parallel:
        if self._entered:
            raise RuntimeError("a parallel block can be entered only once")
        self._entered = True
        # Looked up once: every branch that ends with an error asks which kind it is.
        self._cancelled = anyio.get_cancelled_exc_class()
        self._port.spawn(self._host)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._wake.set()
        if exc is not None:
            self._fail()
            return
        await self._done.wait()
        stop = self._port.stopped()
        if stop is not None:
            raise stop
        errors = [t._error for t in self._tasks if t._error is not None]
        real = [e for e in errors if not isinstance(e, _Cancelled)]
        if real or errors:
            raise (real or errors)[0]


_Branch = tuple[ParallelTask, tuple[Any, ...], dict[str, Any], str | None]


def pool_of(on: str | None) -> str | None:
    """The pool an ``on="pool:NAME"`` argument names (``None``: run here)."""
    if on is None:
        return None
    if not isinstance(on, str) or not on.startswith("pool:") or not on[5:].strip():
        raise ValueError(f"on= names where to run: expected 'pool:NAME', got {on!r}")
    return on[5:]


class _Cancelled(Exception):
    """A branch cancelled because a sibling failed or the run was cancelled."""

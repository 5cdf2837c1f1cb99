"""The :class:`Context` an agent receives: its only way to act.

Every method goes through the run's governance (decision, evidence, lease). A context is
created by the runtime for one agent step; it has no public constructor.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import TaskGroup

from .._util import NoPublicConstructor
from ._decorators import Agent, Tool

if TYPE_CHECKING:
    from ..runtime.kernel._lease import Lease
    from ..runtime.kernel._run import Run
    from ..runtime.kernel._state import Step

__all__ = ["Context", "Parallel", "ParallelTask"]


class Context(metaclass=NoPublicConstructor):
    """What an agent may do: call tools, delegate, fan out, report usage.

    The runtime creates one per agent step; it has no public constructor.
    """

    __slots__ = ("_run", "_step")

    def __init__(self, run: Run, step: Step) -> None:
        self._run = run
        self._step = step

    @property
    def run_id(self) -> str:
        """The id of the run this agent belongs to."""
        return self._run.id

    @property
    def principal(self) -> str:
        """Who authorized the run."""
        return self._run.principal

    @property
    def lease(self) -> Lease:
        """This agent's current (signed, verified) lease."""
        return self._step.lease.lease

    @property
    def trace_carrier(self) -> dict[str, str]:
        """W3C trace-context headers for this agent's own outgoing calls."""
        return self._run.engine.lineage.carrier(self._step.span)

    async def call(self, tool: Tool, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``tool`` under this agent's lease: decided, recorded, then run."""
        if not isinstance(tool, Tool):
            raise TypeError(f"ctx.call expects a @tool, got {tool!r}")
        return await self._run.call_tool(self._step, tool, args, kwargs)

    async def delegate(
        self, agent: Agent, /, *args: Any, scopes: Iterable[str] | None = None, **kwargs: Any
    ) -> Any:
        """Run ``agent`` as a child with a narrowed lease; returns its result."""
        if not isinstance(agent, Agent):
            raise TypeError(f"ctx.delegate expects an @agent, got {agent!r}")
        wanted = None if scopes is None else frozenset(scopes)
        return await self._run.invoke_agent(self._step, agent, args, kwargs, wanted)

    def parallel(self) -> Parallel:
        """Fan out: ``async with ctx.parallel() as p: p.start(...)``; ``p.results`` after."""
        return Parallel._create(self._run, self._step)

    def record_usage(self, tokens: int = 0, cost: float = 0.0) -> None:
        """Count model usage against the run's token and cost budgets."""
        if tokens < 0 or cost < 0:
            raise ValueError(f"usage must be non-negative (tokens={tokens}, cost={cost})")
        self._run.record_usage(self._step, tokens, cost)


_PENDING: Final = object()


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


class Parallel(metaclass=NoPublicConstructor):
    """A fan-out block.

    Its branches run in one task group, hosted by a task of the run's task group (inside the
    run's cancel scope), never in the agent's own frame: the agent only waits on an event,
    so a stop thrown into the agent never has to unwind a task group there. On leaving the
    block normally it waits for every branch and raises the first error in start order; the
    first failing branch cancels its siblings (once, through the group's scope). If the
    block is left by an exception (for instance the run being stopped), it cancels the
    branches and does not wait.
    """

    __slots__ = ("_closed", "_done", "_failed", "_pending", "_run", "_step", "_tasks", "_tg")

    def __init__(self, run: Run, step: Step) -> None:
        self._run = run
        self._step = step
        self._tasks: list[ParallelTask] = []
        self._pending: list[tuple[ParallelTask, Any, tuple[Any, ...]]] = []
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self._done = anyio.Event()
        self._failed = False

    def start(self, target: Agent | Tool, /, *args: Any, **kwargs: Any) -> ParallelTask:
        """Start a branch calling ``target`` (tool) or delegating to it (agent)."""
        run, step = self._run, self._step
        if self._closed.is_set():
            raise RuntimeError("p.start after the parallel block was left")
        if isinstance(target, Tool):
            call: Any = (run.call_tool, (step, target, args, kwargs))
        elif isinstance(target, Agent):
            call = (run.invoke_agent, (step, target, args, kwargs, None))
        else:
            raise TypeError(f"p.start expects an @agent or @tool, got {target!r}")
        task = ParallelTask._create(target)
        self._tasks.append(task)
        if self._tg is not None:
            self._tg.start_soon(self._drive, task, *call)
        else:
            if not self._pending:
                run.spawn(self._host)
            self._pending.append((task, *call))
        return task

    async def _host(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                if self._failed:
                    tg.cancel_scope.cancel()
                self._tg = tg
                for task, fn, args in self._pending:
                    tg.start_soon(self._drive, task, fn, args)
                self._pending.clear()
                await self._closed.wait()
        finally:
            self._tg = None
            self._done.set()

    async def _drive(self, task: ParallelTask, fn: Any, args: tuple[Any, ...]) -> None:
        from ..runtime.kernel._gate import Gate, Governed

        step = self._step
        try:
            # Created here, not in start(): a branch cancelled before it runs leaves no
            # never-awaited coroutine behind.
            task._value = await Governed(
                fn(*args), Gate(self._run, step.lease, step.target.qualified)
            )
        except anyio.get_cancelled_exc_class():
            task._error = _Cancelled(f"branch {task.target.qualified} was cancelled")
            raise
        except BaseException as exc:  # kept for the block's owner, which re-raises it
            task._error = exc
            self._fail()

    def _fail(self) -> None:
        if not self._failed:
            self._failed = True
            if self._tg is not None:
                self._tg.cancel_scope.cancel()

    @property
    def results(self) -> list[Any]:
        """Branch values in start order (after the block)."""
        return [t.result() for t in self._tasks]

    async def __aenter__(self) -> Parallel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed.set()
        if exc is not None:
            self._fail()
            return
        if self._tasks:
            await self._done.wait()
        stop = self._run.stop
        if stop is not None:
            raise stop
        errors = [t._error for t in self._tasks if t._error is not None]
        real = [e for e in errors if not isinstance(e, _Cancelled)]
        if real or errors:
            raise (real or errors)[0]


class _Cancelled(Exception):
    """A branch cancelled because a sibling failed or the run was cancelled."""

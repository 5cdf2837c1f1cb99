"""How synchronous tool and agent bodies run: inline, in a thread, or in a worker process.

- ``"none"``: called inline on the event loop. Blocking here stalls governance; the stall
  detector reports it and stops the run, but cannot interrupt the code.
- ``"thread"``: the decision is recorded before the thread starts; on a stop the thread is
  abandoned (Python cannot stop a thread), its late result is discarded, never returned,
  and the abandonment is recorded (``step.abandoned``).
- ``"process"``: the body runs in a worker process of a per-runtime pool; on any stop of
  the run (revocation, expiry, policy denial, fail-closed stop), on the caller's
  cancellation or on the tool's ``timeout`` the worker is SIGKILLed and reaped and the kill
  is recorded (``isolation.killed``), so the body's side effects end with its authority.
  A call running past ``worker_stall_bound`` is a stall: the worker's stack is recorded
  (``isolation.stall``) before the kill, and the run stops.

Invariants:

- The kill is synchronous: it happens in the same loop step in which the stop reaches the
  waiting call, and nothing awaits between the stop and the kill (whatever cleanup follows
  runs within the run's cleanup grace, with the worker already dead).
- A worker is reused only after it answered its call; one that was interrupted, killed or
  whose pipe broke is never handed out again.
- A worker that dies on its own (``os._exit``, a segfault, an outside ``kill``) stops the run
  fail closed with :class:`GovernanceUnavailable` (check ``isolation.worker_crashed``),
  because the step's outcome and side effects are unknown.
- Arguments go to the worker pickled (the worker trusts its parent); results and errors
  come back in a data-only encoding (:mod:`._wire`) that cannot run code when decoded. The
  ledger records only digests (in ``step.start`` / ``step.end``), never the raw values.
- Reading a reply never blocks the event loop (frames are read as they arrive); a
  garbled or truncated reply (bad frame, end of file inside one, a body that does not
  decode or has the wrong shape) kills the worker and stops the run like a crash
  (``isolation.worker_crashed``): a worker that lies about its reply is not believed.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...evidence._format import ISOLATION_KILLED, ISOLATION_STALL, STEP_ABANDONED
from .._config import RuntimeConfig
from ._pool import PICKLE_PROTOCOL, Worker, WorkerCrashed, WorkerPool
from ._worker import RemoteTraceback, WorkerContext

if TYPE_CHECKING:
    from ...agents._decorators import Agent, Tool
    from ..kernel._control import RunControl
    from ..kernel._state import Step

__all__ = ["Isolation"]


class Isolation:
    """Runs synchronous tool and agent bodies according to their declared isolation."""

    def __init__(self, config: RuntimeConfig, max_workers: int | None = None) -> None:
        self._config = config
        self._max_workers = max_workers
        self._pool: WorkerPool | None = None

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (started lazily, at the first process-isolated call)."""
        if self._pool is None:
            self._pool = WorkerPool(self._max_workers)
        return self._pool

    def close(self) -> None:
        """Stop the worker pool (the runtime is closing)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def call(
        self, run: RunControl, step: Step, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run the body of ``tool``; raise the run's stop if it arrives meanwhile."""
        if tool.isolation == "none":
            return tool.func(*args, **kwargs)
        limit: float | None = getattr(tool, "timeout", None)
        if tool.isolation == "thread":
            return await self._in_thread(run, step, tool.func, args, kwargs, limit)
        return await self._in_process(run, step, tool, args, kwargs, limit)

    async def run_agent(
        self,
        run: RunControl,
        step: Step,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a synchronous agent body (thread or process) with a :class:`WorkerContext`."""
        lease = step.lease
        ctx = WorkerContext(run.id, run.principal, lease.id, lease.lease.scope_set)
        if agent.isolation == "thread":
            return await self._in_thread(run, step, agent.func, (ctx, *args), kwargs, None)
        return await self._in_process(run, step, agent, (ctx, *args), kwargs, None)

    # -- thread ---------------------------------------------------------------------------

    async def _in_thread(
        self,
        run: RunControl,
        step: Step,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Any:
        def body() -> tuple[bool, Any]:
            try:
                return True, func(*args, **kwargs)
            except BaseException as exc:  # handed back to the caller
                return False, exc

        try:
            with _deadline(limit):
                ok, value = await anyio.to_thread.run_sync(body, abandon_on_cancel=True)
        except BaseException as exc:
            # Stopped, cancelled or timed out while the thread runs: it is abandoned (it
            # cannot be stopped); whatever it returns later goes nowhere.
            run.try_record(
                STEP_ABANDONED, {"step": step.id, "reason": _why(run, exc, limit)}, step.span
            )
            if isinstance(exc, TimeoutError) and run.stop is None:
                raise TimeoutError(
                    f"{step.target.qualified} did not finish within its timeout of "
                    f"{limit:g}s; its thread was abandoned"
                ) from None
            raise
        if run.stop is not None:
            # The result arrived after the stop: discarded, never returned to the agent.
            run.try_record(
                STEP_ABANDONED,
                {"step": step.id, "reason": "late result discarded: " + _stop_reason(run)},
                step.span,
            )
            raise run.stop_error()
        if not ok:
            raise value
        return value

    # -- process --------------------------------------------------------------------------

    def _kill_and_record(self, run: RunControl, step: Step, worker: Worker, reason: str) -> None:
        self.pool.discard(worker, kill=True)
        run.try_record(
            ISOLATION_KILLED, {"step": step.id, "pid": worker.pid, "reason": reason}, step.span
        )

    async def _stalled(
        self, run: RunControl, step: Step, target: Tool | Agent, worker: Worker, stall: float
    ) -> GovernanceViolation:
        """A call ran past ``worker_stall_bound``: take its stack, kill it, stop the run."""
        try:
            stack = await worker.dump_stack(_STACK_WAIT_S)
        finally:
            self._kill_and_record(run, step, worker, f"stall: running for more than {stall:g}s")
        frame = _innermost(stack)
        run.try_record(
            ISOLATION_STALL,
            {
                "step": step.id,
                "pid": worker.pid,
                "duration_ms": int(stall * 1000),
                "frame": stack[-2000:] or "unknown",
            },
            step.span,
        )
        return run.fail(
            GovernanceUnavailable(
                f"{target.qualified} ran for more than worker_stall_bound ({stall:g}s) in its "
                f"worker process (pid {worker.pid}), which was killed; it was in {frame}",
                lease_id=step.lease.id,
                check="isolation.stall",
                task=target.qualified,
                source="isolation",
            )
        )

    async def _in_process(
        self,
        run: RunControl,
        step: Step,
        target: Tool | Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Any:
        func = target.func
        module = sys.modules.get(func.__module__)
        file = getattr(module, "__file__", None)
        try:
            payload = pickle.dumps(
                (func.__module__, func.__qualname__, file, args, kwargs), PICKLE_PROTOCOL
            )
        except Exception as exc:
            raise TypeError(
                f"the arguments of {target.qualified} cannot cross the process boundary "
                f"(process isolation pickles them): {type(exc).__name__}: {exc}"
            ) from exc
        pool = self.pool
        try:
            worker = await pool.acquire()
        except WorkerCrashed as exc:
            raise run.fail(
                GovernanceUnavailable(
                    f"a worker process for {target.qualified} failed to start: {exc}",
                    lease_id=step.lease.id,
                    check="isolation.worker_start",
                    task=target.qualified,
                    source="isolation",
                )
            ) from None
        stall = self._config.worker_stall_bound
        stalls = stall is not None and (limit is None or stall < limit)
        try:
            with _deadline(stall if stalls else limit):
                ok, value = await worker.call(payload)
        except TimeoutError:
            if not stalls or run.stop is not None:
                self._kill_and_record(run, step, worker, _why(run, TimeoutError(), limit))
                if run.stop is not None:
                    raise
                raise TimeoutError(
                    f"{target.qualified} did not finish within its timeout of {limit:g}s; "
                    f"its worker process (pid {worker.pid}) was killed"
                ) from None
            assert stall is not None
            raise await self._stalled(run, step, target, worker, stall) from None
        except WorkerCrashed as exc:
            pool.discard(worker, kill=True)  # gone, or not believed: killed and reaped
            what = (
                f"{exc}, and was killed"
                if exc.garbled
                else f"died with {worker.exit_description()} before answering"
            )
            raise run.fail(
                GovernanceUnavailable(
                    f"the worker process (pid {worker.pid}) running {target.qualified} {what}; "
                    "the step's outcome is unknown, so the run stops",
                    lease_id=step.lease.id,
                    check="isolation.worker_crashed",
                    task=target.qualified,
                    source="isolation",
                )
            ) from None
        except BaseException as exc:
            # The stop (thrown in by the gate) or a cancellation: kill first, with no await
            # in between, then record.
            self._kill_and_record(run, step, worker, _why(run, exc, limit))
            raise
        pool.release(worker)
        if not ok:
            error, text = value
            raise error from RemoteTraceback(f'\n"""\n{text}"""') if text else None
        return value


_STACK_WAIT_S = 0.5  # how long a stalled worker gets to write its stack before the kill


def _innermost(stack: str) -> str:
    """``File "...", line N in name`` of the innermost frame of a faulthandler dump."""
    for line in stack.splitlines():
        line = line.strip()
        if line.startswith("File "):
            return line
    return "an unknown frame (the worker wrote no stack)"


def _deadline(timeout: float | None) -> contextlib.AbstractContextManager[Any]:
    return anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext()


def _stop_reason(run: RunControl) -> str:
    stop = run.stop
    if stop is None:
        return run.cancelled_reason or "cancelled"
    return f"{type(stop).__name__} ({stop.check}): {stop.reason}"


def _why(run: RunControl, exc: BaseException, timeout: float | None) -> str:
    if run.stop is not None or run.cancelled_reason is not None:
        return _stop_reason(run)
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"timeout after {timeout:g}s"
    return f"the calling task ended ({type(exc).__name__})"

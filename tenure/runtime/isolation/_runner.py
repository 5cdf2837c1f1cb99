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
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...evidence._format import ISOLATION_KILLED, ISOLATION_STALL, STEP_ABANDONED
from .._config import RuntimeConfig
from ._wire import FrameReader, WireError, decode_reply, frame, send_frame
from ._worker import RemoteTraceback, WorkerContext, resolve

if TYPE_CHECKING:
    from ...agents._decorators import Agent, Tool
    from ..kernel._control import RunControl
    from ..kernel._state import Step

__all__ = ["Isolation", "WorkerPool", "call_in_worker"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_REAP_SECONDS = 0.05  # synchronous wait for a SIGKILLed worker; then a reaper thread waits


def call_in_worker(
    module: str, qualname: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Resolve ``module.qualname`` to its plain function and call it (in this process)."""
    return resolve(module, qualname, None)(*args, **kwargs)


class _Crashed(Exception):
    """The worker's channel closed, or it sent a garbled reply: it is gone or not believed."""

    def __init__(self, message: str, *, garbled: bool = False) -> None:
        super().__init__(message)
        self.garbled = garbled


_WORKER_CMD = "from tenure.runtime.isolation._worker import main; main()"


class _Worker:
    """One worker process and the parent's end of its socket pair."""

    __slots__ = ("idle_since", "pid", "proc", "reader", "sock", "stack_file")

    def __init__(self) -> None:
        if sys.platform == "win32":
            raise RuntimeError("isolation='process' needs a POSIX system (Linux or macOS)")
        fd, self.stack_file = tempfile.mkstemp(prefix="tenure-worker-", suffix=".stack")
        os.close(fd)
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CMD, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # Its own process group, so that a stop kills whatever the tool spawned too
                # (a shell, a subprocess) and not only the worker.
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            _unlink(self.stack_file)
            raise
        finally:
            theirs.close()  # else the parent never sees end-of-file when the worker dies
        self.proc = proc
        self.pid: int = proc.pid
        self.idle_since = 0.0
        self.sock = ours
        # The init message is small: it fits the socket buffer, so this send cannot block.
        ours.sendall(frame(pickle.dumps(("init", list(sys.path), self.stack_file), _PROTOCOL)))
        ours.setblocking(False)
        self.reader = FrameReader(ours)

    async def dump_stack(self, wait: float) -> str:
        """The worker's current Python stack (SIGUSR1 -> faulthandler); ``""`` if none came.

        Waits at most ``wait`` seconds for the dump to appear and stop growing.
        """
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            return ""
        deadline = monotonic() + wait
        size = -1
        while monotonic() < deadline:
            # Another process writes the file: there is no event to wait on, so poll.
            await anyio.sleep(0.01)
            try:
                now = os.stat(self.stack_file).st_size
            except OSError:
                return ""
            if now > 0 and now == size:
                break
            size = now
        return _read_text(self.stack_file)

    async def recv(self) -> Any:
        """The next reply from the worker (the loop stays free while it works).

        Raises :class:`_Crashed` when the channel ends or the reply is garbled.
        """
        try:
            data = await self.reader.frame()
        except EOFError as exc:
            raise _Crashed(str(exc)) from None
        except WireError as exc:
            raise _Crashed(f"it sent a garbled reply: {exc}", garbled=True) from None
        try:
            return decode_reply(data)
        except WireError as exc:
            raise _Crashed(f"it sent a garbled reply: {exc}", garbled=True) from None

    async def call(self, payload: bytes) -> tuple[bool, Any]:
        """Send one call and wait for ``(ok, value)``; :class:`_Crashed` on a bad reply."""
        try:
            await send_frame(self.sock, payload)
        except OSError as exc:
            raise _Crashed(str(exc)) from None
        reply = await self.recv()
        if not (
            isinstance(reply, tuple)
            and len(reply) == 2
            and type(reply[0]) is bool
            and (reply[0] or _is_failure(reply[1]))
        ):
            raise _Crashed(
                f"it sent a reply of the wrong shape: {type(reply).__name__}", garbled=True
            )
        return reply[0], reply[1]

    def alive(self) -> bool:
        return self.sock.fileno() != -1 and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker's process group and reap the worker (bounded).

        The group is the worker and every process it started that did not leave the group
        (``setsid``/``setpgid``); the worker, not yet reaped, keeps the group id from being
        reused. A slow death is reaped by a daemon thread.
        """
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.proc.kill()
        self.reap()

    def reap(self) -> None:
        """Close the channel and wait for the process to be gone (bounded)."""
        with contextlib.suppress(OSError):
            self.sock.close()
        _unlink(self.stack_file)
        try:
            self.proc.wait(_REAP_SECONDS)
        except subprocess.TimeoutExpired:
            threading.Thread(target=self.proc.wait, name="tenure-reaper", daemon=True).start()

    def exit_description(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "an unknown status (the process had not been reaped)"
        if code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"


class WorkerPool:
    """Reusable worker processes (fresh interpreters), at most ``max_workers`` busy.

    Healthy idle workers are reused most-recently-used first; workers idle longer than
    ``idle_seconds`` are closed. Workers are started from the event-loop thread (on Linux
    the kernel kills a worker when the thread that started it exits).
    """

    def __init__(self, max_workers: int | None = None, idle_seconds: float = 300.0) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers or max(2, os.cpu_count() or 1)
        self.idle_seconds = idle_seconds
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._waiters: deque[anyio.Event] = deque()
        self._closed = False
        self.started = 0

    @property
    def busy(self) -> int:
        """Workers currently running a call."""
        return len(self._busy)

    def idle_pids(self) -> list[int]:
        """Pids of idle, reusable workers."""
        return [w.pid for w in self._idle]

    async def acquire(self) -> _Worker:
        """A ready worker: an idle one, or a new one once below ``max_workers``."""
        if self._closed:
            raise RuntimeError("the runtime's worker pool is closed")
        while len(self._busy) >= self.max_workers:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                if event.is_set():
                    self._wake()  # pass the wake-up on
                else:
                    self._waiters.remove(event)
                raise
        while self._idle:
            worker = self._idle.pop()
            if worker.alive():
                self._busy.add(worker)
                return worker
            worker.reap()
        worker = _Worker()
        self.started += 1
        self._busy.add(worker)
        try:
            hello = await worker.recv()
        except BaseException:
            self.discard(worker, kill=True)
            raise
        if not (isinstance(hello, tuple) and hello[:1] == ("ready",)):
            self.discard(worker, kill=True)
            raise _Crashed(f"unexpected first message from worker pid {worker.pid}: {hello!r}")
        return worker

    def release(self, worker: _Worker) -> None:
        """Give a healthy worker back after its call returned."""
        self._busy.discard(worker)
        now = monotonic()
        if self._closed:
            worker.reap()
        else:
            worker.idle_since = now
            self._idle.append(worker)
            self._prune(now)
        self._wake()

    def discard(self, worker: _Worker, *, kill: bool) -> None:
        """Take a worker out of service (killing it first if asked) and reap it."""
        self._busy.discard(worker)
        if kill:
            worker.kill()
        else:
            worker.reap()
        self._wake()

    def _wake(self) -> None:
        if self._waiters and len(self._busy) < self.max_workers:
            self._waiters.popleft().set()

    def _prune(self, now: float) -> None:
        stale = [w for w in self._idle if now - w.idle_since > self.idle_seconds]
        for worker in stale:
            self._idle.remove(worker)
            worker.reap()

    def close(self) -> None:
        """Stop every worker: idle ones end on end-of-file, busy ones are killed."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            with contextlib.suppress(OSError):
                worker.sock.close()
        for worker in list(self._busy):
            worker.kill()
        for worker in idle:
            try:
                worker.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                worker.kill()
            else:
                worker.reap()


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

    def _kill_and_record(self, run: RunControl, step: Step, worker: _Worker, reason: str) -> None:
        self.pool.discard(worker, kill=True)
        run.try_record(
            ISOLATION_KILLED, {"step": step.id, "pid": worker.pid, "reason": reason}, step.span
        )

    async def _stalled(
        self, run: RunControl, step: Step, target: Tool | Agent, worker: _Worker, stall: float
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
                (func.__module__, func.__qualname__, file, args, kwargs), _PROTOCOL
            )
        except Exception as exc:
            raise TypeError(
                f"the arguments of {target.qualified} cannot cross the process boundary "
                f"(process isolation pickles them): {type(exc).__name__}: {exc}"
            ) from exc
        pool = self.pool
        try:
            worker = await pool.acquire()
        except _Crashed as exc:
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
        except _Crashed as exc:
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


def _read_text(path: str) -> str:
    # A small local file the worker has finished writing: reading it does not block.
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _is_failure(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], BaseException)
        and isinstance(value[1], str)
    )


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


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

"""The worker processes of process isolation: one :class:`Worker`, and the pool that reuses them.

A worker is a fresh interpreter (:mod:`._worker`) holding one end of a socket pair; the
parent sends a pickled call and reads a data-only reply (:mod:`._wire`) without blocking the
loop. Invariants: a worker is handed out again only after it answered its call (one that was
interrupted, killed or whose pipe broke is discarded); a SIGKILL reaches the worker's whole
process group (whatever the tool spawned too); a reply that does not decode is
:class:`WorkerCrashed` (``garbled``): a worker that lies about its reply is not believed.
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
from time import monotonic
from typing import Any, Final

import anyio

from ._wire import FrameReader, WireError, decode_reply, frame, send_frame

__all__ = ["PICKLE_PROTOCOL", "Worker", "WorkerCrashed", "WorkerPool"]

#: how calls and their arguments are pickled for a worker
PICKLE_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
_REAP_SECONDS: Final = 0.05  # synchronous wait for a SIGKILLed worker; then a reaper thread waits


class WorkerCrashed(Exception):
    """The worker's channel closed, or it sent a garbled reply: it is gone or not believed."""

    def __init__(self, message: str, *, garbled: bool = False) -> None:
        super().__init__(message)
        self.garbled = garbled


_WORKER_CMD = "from tenure.runtime.isolation._worker import main; main()"


class Worker:
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
        ours.sendall(
            frame(pickle.dumps(("init", list(sys.path), self.stack_file), PICKLE_PROTOCOL))
        )
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

        Raises :class:`WorkerCrashed` when the channel ends or the reply is garbled.
        """
        try:
            data = await self.reader.frame()
        except EOFError as exc:
            raise WorkerCrashed(str(exc)) from None
        except WireError as exc:
            raise WorkerCrashed(f"it sent a garbled reply: {exc}", garbled=True) from None
        try:
            return decode_reply(data)
        except WireError as exc:
            raise WorkerCrashed(f"it sent a garbled reply: {exc}", garbled=True) from None

    async def call(self, payload: bytes) -> tuple[bool, Any]:
        """Send one call and wait for ``(ok, value)``; :class:`WorkerCrashed` on a bad reply."""
        try:
            await send_frame(self.sock, payload)
        except OSError as exc:
            raise WorkerCrashed(str(exc)) from None
        reply = await self.recv()
        if not (
            isinstance(reply, tuple)
            and len(reply) == 2
            and type(reply[0]) is bool
            and (reply[0] or _is_failure(reply[1]))
        ):
            raise WorkerCrashed(
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
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
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

    async def acquire(self) -> Worker:
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
        worker = Worker()
        self.started += 1
        self._busy.add(worker)
        try:
            hello = await worker.recv()
        except BaseException:
            self.discard(worker, kill=True)
            raise
        if not (isinstance(hello, tuple) and hello[:1] == ("ready",)):
            self.discard(worker, kill=True)
            raise WorkerCrashed(f"unexpected first message from worker pid {worker.pid}: {hello!r}")
        return worker

    def release(self, worker: Worker) -> None:
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

    def discard(self, worker: Worker, *, kill: bool) -> None:
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


def _read_text(path: str) -> str:
    # A small local file the worker has finished writing: reading it does not block.
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _is_failure(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], BaseException)
        and isinstance(value[1], str)
    )

"""The stall detector: notices an event loop blocked by synchronous code.

A heartbeat task stamps the loop's last turn every ``heartbeat_interval``. A daemon thread
wakes at the same period; if governed tasks are live and the loop has not turned for longer
than ``stall_bound``, it captures the loop thread's current frame (the blocking code), sets
every live run's stop flag from the thread — gates read it at the next resumption, so the
blocked task is not resumed past its current synchronous stretch — and schedules the full
stop (evidence record, scope cancellation) for when the loop turns again.

Cooperative code cannot be interrupted while it blocks; process isolation is the real stop
for such code (see ``@tool(isolation="process")``).

The runtime's own durable writes (an evidence ``fsync`` or atomic rename, which a loaded
disk can hold for seconds) are not a stall by synchronous code: they go through
:class:`RuntimeIO`, which marks them, and the detector does not count their time (the loop
is doing governance's own work, no user code runs meanwhile). A disk that never answers is
still caught: the watchdog heartbeat, checked by every gate, goes stale.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from time import monotonic
from typing import Any, Protocol

import anyio
from anyio.lowlevel import current_token

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...evidence._format import STALL
from ...evidence._ledger_io import FileOps
from .._config import RuntimeConfig

__all__ = ["Breachable", "RuntimeIO", "StallDetector"]


class Breachable(Protocol):
    """A run as the stall detector sees it."""

    @property
    def id(self) -> str:
        """The run id."""
        ...

    @property
    def busy(self) -> bool:
        """Whether governed steps are live."""
        ...

    @property
    def stop(self) -> GovernanceViolation | None:
        """The run's stop, if it stopped."""
        ...

    def breach(self, exc: GovernanceViolation) -> None:
        """Set the stop flag from this (non-loop) thread."""
        ...

    def blocking_hint(self) -> str:
        """Which live step is likely blocking the loop, and how to fix it ('' if unknown)."""
        ...

    def try_record(self, kind: str, fields: dict[str, Any]) -> None:
        """Append a record on a stopping path."""
        ...

    def apply_stop(self) -> None:
        """Record the stop and cancel the run (on the loop)."""
        ...


class StallDetector:
    """See the module docstring."""

    def __init__(
        self, config: RuntimeConfig, live_runs: Callable[[], Sequence[Breachable]]
    ) -> None:
        self._live_runs = live_runs
        self._bound = config.stall_bound
        self._interval = config.heartbeat_interval
        self._beat = monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()
        self._token = current_token()
        self._own_io = 0
        self.breaches = 0

    async def heartbeat(self) -> None:
        """Loop task: stamp every turn of the loop (runs until the runtime closes)."""
        while True:
            self._beat = monotonic()
            await anyio.sleep(self._interval)

    def start(self) -> None:
        """Start the watcher thread."""
        self._thread = threading.Thread(target=self._watch, name="tenure-stall", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher thread (bounded wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the event loop's thread."""
        return threading.get_ident() == self._loop_thread

    def own_io_started(self) -> None:
        """The loop thread entered one of the runtime's own durable writes."""
        self._own_io += 1

    def own_io_ended(self) -> None:
        """It returned: the loop is the runtime's again, as at a heartbeat."""
        self._own_io -= 1
        self._beat = monotonic()

    def _watch(self) -> None:
        breached_at: float | None = None
        while not self._stop.wait(self._interval):
            if self._own_io:
                continue
            gap = monotonic() - self._beat
            if gap <= self._bound:
                breached_at = None
                continue
            if breached_at == self._beat or not any(r.busy for r in self._live_runs()):
                continue
            breached_at = self._beat
            self._breach(gap)

    def _breach(self, gap: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        where = "".join(traceback.format_stack(frame, limit=3)).strip() if frame else "unknown"
        runs = [r for r in self._live_runs() if r.busy and r.stop is None]
        for run in runs:
            hint = run.blocking_hint()
            exc = GovernanceUnavailable(
                f"the event loop was blocked for more than {self._bound:g}s by synchronous "
                f"code; governance could not run (blocking frame: {_last_line(where)})"
                + (f"; {hint}" if hint else ""),
                run_id=run.id,
                check="loop.stall",
                source="stall-detector",
            )
            run.breach(exc)  # read by gates without the loop's help
        # Counted once the runs are flagged: whoever sees the count sees their stops too.
        self.breaches += 1
        start = self._beat
        # If the loop is closing, the stop flags set above already hold.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(self._apply, runs, start, where, token=self._token)

    def _apply(self, runs: list[Breachable], start: float, where: str) -> None:
        duration_ms = int((monotonic() - start) * 1000)
        for run in runs:
            run.try_record(STALL, {"duration_ms": duration_ms, "frame": where[-2000:]})
            run.apply_stop()


class RuntimeIO(FileOps):
    """The evidence's file operations (``inner``'s), the slow ones marked as the runtime's
    own so that the stall detector does not count them."""

    def __init__(self, detector: StallDetector | None, inner: FileOps | None = None) -> None:
        self._detector = detector
        self._inner = inner if inner is not None else FileOps()

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        """``inner.open``."""
        return self._inner.open(path, flags, mode)

    def write(self, fd: int, data: bytes) -> int:
        """``inner.write``."""
        return self._inner.write(fd, data)

    def close(self, fd: int) -> None:
        """``inner.close``."""
        self._inner.close(fd)

    def fsync(self, fd: int) -> None:
        """``inner.fsync``, not counted as a stall."""
        with self._own():
            self._inner.fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        """``inner.replace``, not counted as a stall."""
        with self._own():
            self._inner.replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        """``inner.fsync_dir``, not counted as a stall."""
        with self._own():
            self._inner.fsync_dir(path)

    @contextlib.contextmanager
    def _own(self) -> Iterator[None]:
        detector = self._detector
        if detector is None or not detector.on_loop_thread():
            yield  # a worker thread's write (a run's final commit) holds no loop
            return
        detector.own_io_started()
        try:
            yield
        finally:
            detector.own_io_ended()


def _last_line(where: str) -> str:
    lines = [ln.strip() for ln in where.splitlines() if ln.strip()]
    return " | ".join(lines[-2:]) if lines else "unknown"

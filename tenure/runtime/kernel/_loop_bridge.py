"""Calls from a framework's worker thread into the run's event loop that never deadlock.

A sync framework (``graph.invoke``) runs its tools in pool threads, and the governed call's
decision and records are made on the event loop. If the framework itself was called *on*
the loop's thread, the loop is blocked waiting for that pool thread while the pool thread
waits for the loop: both would hang for ever. So a call into the loop is waited for in short
slices, and given up the moment the run stops; the stall detector stops a run whose loop
stays blocked (``loop.stall``), so a wrong call ends as a recorded stop, not a hang.

Invariants:

- The call runs in the calling thread's context (contextvars, the current span), as
  ``anyio.from_thread.run`` would run it.
- The calling thread is never the loop's own (that is refused with ``RuntimeError``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ..._errors import GovernanceViolation

__all__ = ["LoopBridge"]

T = TypeVar("T")

_SLICE_S: Final = 0.05  # how often a waiting worker thread looks at the run's stop flag


class LoopBridge:
    """The run's event loop, seen from worker threads (created on the loop)."""

    def __init__(self, stopped: Callable[[], GovernanceViolation | None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._stopped = stopped

    def refuse_loop_thread(self, what: str, instead: str) -> None:
        """``RuntimeError`` when called on the loop's thread (it would block the loop)."""
        if threading.get_ident() == self._thread:
            raise RuntimeError(
                f"{what} was called on the event loop's thread, where it would block the "
                f"loop: {instead}"
            )

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (a coroutine function or a plain one) on the loop; its result.

        Raises what ``fn`` raised, or the run's stop if the run stopped while waiting.
        """
        ctx = contextvars.copy_context()
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            try:
                out = ctx.run(fn, *args)
            except BaseException as exc:  # handed to the waiting thread
                done.set_exception(exc)
                return
            if inspect.iscoroutine(out):
                task: asyncio.Task[Any] = self._loop.create_task(out, context=ctx)
                task.add_done_callback(lambda t: _settle(t, done))
            else:
                done.set_result(out)

        self._loop.call_soon_threadsafe(start)
        while True:
            try:
                return done.result(timeout=_SLICE_S)
            except concurrent.futures.TimeoutError:
                stop = self._stopped()
                if stop is not None:
                    raise stop from None


def _settle(task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
    if done.done():
        return
    if task.cancelled():
        done.set_exception(concurrent.futures.CancelledError())
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())

"""Fair turns: the runtime's own work never holds the event loop for long.

A governed step's own work (decision, lease, records, spans) and a run's setup each take
tens of microseconds to a millisecond. Thousands of them ready in the same loop iteration —
a fan-out of 10,000 agents, a hundred runs starting at once, a chain of tool calls or
delegations that never await — would hold the loop for seconds: the heartbeat, the
watchdog and every other run would wait, and the stall detector would rightly report a
breach that no user code caused.

The :class:`Pacer` cuts that work into slices of about ``slice_s`` seconds. A step that
starts when the current slice is used up waits in a FIFO queue. Once per loop iteration the
pacer releases as many waiters as fitted in the previous iteration's slice (a feedback on
the measured iteration time), so a queue of 10,000 costs each waiter one wake-up, never a
spin; between iterations the loop runs its timers and I/O (the heartbeat, the watchdog,
other runs). One pacer serves a whole runtime, so one run's fan-out cannot starve another.

Work of steps already under way (a running agent's tool call) is released before new work
(a new agent, a new run): finishing started work first keeps the number of live leases —
and so the watchdog's renewals and the memory held — bounded by what is in progress, not
by the width of the fan-out.

Invariant: while steps are queued, every newcomer queues behind those of its class (first
come, first served), and each loop iteration admits a bounded number of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import monotonic

__all__ = ["Pacer"]

_MAX_BATCH = 1000  # waiters released per iteration, at most


class Pacer:
    """Shared time slices for the runtime's own work (see the module docstring)."""

    __slots__ = (
        "_admitted",
        "_batch",
        "_continuing",
        "_renewing",
        "_slice",
        "_start",
        "_waiters",
        "waits",
    )

    def __init__(self, slice_s: float) -> None:
        self._slice = slice_s
        self._start = monotonic()
        self._renewing = False
        self._admitted = 0
        self._batch = 1
        self._continuing: deque[asyncio.Future[None]] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.waits = 0

    def due(self) -> bool:
        """Whether the caller must :meth:`pace` before its step (the slice is used up)."""
        if self._waiters or self._continuing:
            return True
        if monotonic() - self._start < self._slice:
            self._admitted += 1
            return False
        return True

    async def pace(self, *, continuing: bool = False) -> None:
        """Wait for this step's turn (FIFO); returns at once if the slice has room.

        ``continuing``: the step continues work already under way (released first).
        """
        if not self.due():
            return
        waiter = asyncio.get_running_loop().create_future()
        (self._continuing if continuing else self._waiters).append(waiter)
        self.waits += 1
        self._schedule()
        await waiter  # a cancelled waiter is skipped when its turn comes

    def _schedule(self) -> None:
        if not self._renewing:
            self._renewing = True
            asyncio.get_running_loop().call_soon(self._renew)

    def _renew(self) -> None:
        self._renewing = False
        now = monotonic()
        elapsed = now - self._start
        # How many steps fitted in the last slice: scale the batch by slice / elapsed.
        fitted = max(self._admitted, 1)
        if elapsed > 0:
            fitted = int(fitted * self._slice / elapsed) or 1
        self._batch = min(_MAX_BATCH, max(1, fitted))
        self._start = now
        self._admitted = 0
        released = 0
        for waiters in (self._continuing, self._waiters):
            while waiters and released < self._batch:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    released += 1
        self._admitted = released
        if self._continuing or self._waiters:
            self._schedule()

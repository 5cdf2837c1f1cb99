"""A process's standing with the control plane: its liveness lease and the events it applied.

The renewal rule (Kubernetes client-go's, plus fencing): take ``t_send = monotonic()``
before sending a renewal; the reply carries the governance log's head revision; apply
every event up to that revision first; only then set ``deadline = t_send + ttl - margin``.
Only the *rate* of this host's clock matters, never its offset from the server's: the
server measured the ttl from a moment after ``t_send``, so this process's authority always
ends before the server can declare it lost and fence its writes.

:attr:`ControlPlane.deadline` is what the engine folds into the O(1) check every gate
already makes on each resumption (nothing is added per await); ``on_expired`` runs when
the deadline passes unrenewed, so sleeping work is stopped too, not only work that
resumes.

Invariants:

- Events are applied in revision order, each exactly once, whether they arrive through a
  notification, a renewal reply or a catch-up after reconnecting; a gap in the revisions
  read is a fault (the deadline is not extended).
- The deadline never moves later unless a renewal was acknowledged *and* every event up to
  its revision was applied; a failed application (``on_event`` raised) leaves it as it was.
- A member declared lost never gets its old generation back: it registers again (a new
  generation) and ``on_member`` tells the owner, whose old work has stopped already.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from time import monotonic
from typing import Any

import anyio
import anyio.abc

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ._protocols import Backend
from ._types import GovEvent, Member

__all__ = ["ControlPlane"]

_log = logging.getLogger("tenure.backend")

_NEVER = float("-inf")


class ControlPlane:
    """See the module docstring.

    Args:
        backend: where the liveness lease and the governance log are.
        name: this process's member name (unique among live members; "" = anonymous).
        pool: the pool it serves (``None`` for a runtime that only starts runs).
        on_event: applies one governance event (awaited, in revision order).
        on_expired: called once each time the deadline passes unrenewed.
        on_member: called with the member after each (re-)registration.
        on_deadline: called with the new deadline each time it moves (renewed, lost, left).
        ttl: the liveness lease the server keeps (seconds, server clock).
        margin: how much sooner than the server this process gives up its authority.
        interval: seconds between renewals.
        reap_interval: seconds between reaper passes (every member reaps).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        name: str,
        pool: str | None,
        on_event: Callable[[GovEvent], Awaitable[None]],
        on_expired: Callable[[], None] = lambda: None,
        on_member: Callable[[Member], None] = lambda member: None,
        on_deadline: Callable[[float], None] = lambda deadline: None,
        info: Mapping[str, Any] | None = None,
        ttl: float = 3.0,
        margin: float = 0.5,
        interval: float = 0.5,
        reap_interval: float = 0.25,
    ) -> None:
        if not 0 < margin < ttl:
            raise ValueError(f"margin must be within (0, ttl={ttl:g}), got {margin!r}")
        if not 0 < interval < ttl - margin:
            raise ValueError(
                f"renewal interval must be within (0, ttl - margin = {ttl - margin:g}), "
                f"got {interval!r}"
            )
        self.backend = backend
        self.name = name
        self.pool = pool
        self.ttl, self.margin, self.interval = ttl, margin, interval
        self.reap_interval = reap_interval
        self._on_event = on_event
        self._on_expired = on_expired
        self._on_member = on_member
        self._on_deadline = on_deadline
        self._info = dict(info or {})
        self.member: Member | None = None
        #: monotonic time at which this process's authority ends unless renewed
        self.deadline = _NEVER
        #: the last governance revision applied
        self.applied = 0
        self.renewals = 0
        self._apply_lock = anyio.Lock()
        self._expiry_reported = True

    # -- registration and events ----------------------------------------------------------

    async def join(self) -> Member:
        """Register, apply the whole log so far, and set the first deadline."""
        t_send = monotonic()
        member = await self.backend.liveness.register(self.name, self.pool, self.ttl, self._info)
        head = await self.backend.log.head()
        await self.catch_up(head)
        self.member = member
        self._extend(t_send)
        self._on_member(member)
        return member

    async def catch_up(self, upto: int | None = None, hinted: Sequence[GovEvent] = ()) -> None:
        """Apply every event after :attr:`applied` (up to ``upto``), in order, once.

        ``hinted`` are events a notification carried: when they follow :attr:`applied`
        without a gap they are applied as they are, and the log is read only for what they
        do not cover (a gap before them, or revisions up to ``upto`` beyond them).
        """
        async with self._apply_lock:
            if hinted and hinted[0].revision <= self.applied + 1:
                for event in hinted:
                    if event.revision == self.applied + 1:
                        await self._on_event(event)
                        self.applied = event.revision
                if upto is None or upto <= self.applied:
                    return
            if upto is not None and upto <= self.applied:
                return
            events = await self.backend.log.read(self.applied, upto)
            for event in events:
                if event.revision != self.applied + 1:
                    raise GovernanceUnavailable(
                        f"the governance log skipped from revision {self.applied} to "
                        f"{event.revision}: events cannot be applied in order",
                        check="backend.log",
                        source="backend",
                    )
                await self._on_event(event)
                self.applied = event.revision
            if upto is not None and self.applied < upto:
                raise GovernanceUnavailable(
                    f"the governance log ends at revision {self.applied}, the renewal said {upto}",
                    check="backend.log",
                    source="backend",
                )

    def _extend(self, t_send: float) -> None:
        self._set_deadline(t_send + self.ttl - self.margin)
        self._expiry_reported = False

    def _set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        self._on_deadline(deadline)

    def live(self) -> bool:
        """Whether this process's authority holds right now (its own clock)."""
        return monotonic() < self.deadline

    # -- the loops ------------------------------------------------------------------------

    async def renew_once(self) -> bool:
        """One renewal by the rule; whether it was acknowledged and applied."""
        member = self.member
        if member is None:
            return False
        t_send = monotonic()
        try:
            with anyio.fail_after(self.interval):
                revision = await self.backend.liveness.renew(member)
                await self.catch_up(revision)
        except GovernanceViolation as exc:
            if exc.check == "worker.lost":
                self._lost(exc)
            else:
                _log.warning("renewal of %s failed: %s", self.name or member.id, exc)
            return False
        except TimeoutError:
            _log.warning("renewal of %s not acknowledged within %gs", self.name, self.interval)
            return False
        self.renewals += 1
        self._extend(t_send)
        return True

    def _lost(self, exc: GovernanceViolation) -> None:
        _log.warning("%s", exc)
        self._set_deadline(_NEVER)
        self.member = None
        self._report_expiry()

    def _report_expiry(self) -> None:
        if not self._expiry_reported:
            self._expiry_reported = True
            self._on_expired()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew, reap, listen and re-register until cancelled (start it in a task group)."""
        if self.member is None:
            await self.join()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_loop)
            tg.start_soon(self._reap_loop)
            tg.start_soon(self._listen_loop)
            task_status.started()

    async def _renew_loop(self) -> None:
        next_renewal = monotonic() + self.interval
        while True:
            now = monotonic()
            wait = next_renewal - now
            if self.deadline > now:
                wait = min(wait, self.deadline - now)  # wake to report the expiry on time
            await anyio.sleep(max(0.0, wait))
            if monotonic() >= self.deadline:
                self._report_expiry()
            if monotonic() < next_renewal:
                continue
            next_renewal = monotonic() + self.interval
            if self.member is None:
                await self._rejoin()
            elif not await self.renew_once() and monotonic() >= self.deadline:
                self._report_expiry()

    async def _rejoin(self) -> None:
        try:
            with anyio.fail_after(self.interval * 2):
                await self.join()
        except (GovernanceViolation, TimeoutError) as exc:
            _log.warning("%s cannot register again yet: %s", self.name, exc)

    async def _reap_loop(self) -> None:
        while True:
            await anyio.sleep(self.reap_interval)
            if not self.live():
                continue  # a member without authority writes nothing, reaps included
            try:
                with anyio.fail_after(self.interval):
                    await self.backend.liveness.reap()
            except (GovernanceViolation, TimeoutError) as exc:
                _log.debug("reaper pass failed: %s", exc)

    async def _listen_loop(self) -> None:
        # Notifications only bring events sooner: renewals apply them anyway.
        while True:
            try:
                hinted = await self.backend.log.wait(self.applied, self.interval * 4)
                with anyio.fail_after(self.interval):
                    await self.catch_up(hinted=hinted)
            except (GovernanceViolation, TimeoutError) as exc:
                _log.debug("catch-up after a notification failed: %s", exc)
                await anyio.sleep(self.interval)

    async def leave(self) -> None:
        """Leave the control plane cleanly (a drained worker's last call)."""
        member, self.member = self.member, None
        self._set_deadline(_NEVER)
        if member is not None:
            with anyio.move_on_after(self.interval):
                await self.backend.liveness.leave(member)

"""One run, start to end: its lifecycle, the watchdog's duties and revocation.

:class:`Run` is the whole of a run as the runtime sees it: the layers below it (state,
evidence and the stop; checks; records; decisions; :class:`GovernedSteps`, how each agent
invocation and tool call is let through) and, here, how the run is driven from its root
step to its ``run.end`` record, how its leases are renewed and how it is revoked.

Invariants:

- ``drive`` always ends with a ``run.end`` record (unless the ledger itself failed) and
  ``done`` set, whatever the root agent did; ``done`` is set only once the evidence is
  durable (its fsync and final checkpoint, done off the event loop: runs closing together
  fsync concurrently, which the filesystem's journal commits together).
- Renewals of one watchdog pass are signed in one batch per delegation depth (a child's
  renewal binds its parent's new generation, so parents are signed first).
- Revoking a lease revokes its descendants; the ``lease.revoked`` record names the lease,
  and a verifier derives the descendants from the leases' parent links.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ..._errors import GovernanceViolation, LeaseRevoked, PolicyDenied
from ...evidence._format import LEASE_REVOKED, RUN_END
from ...lineage._names import EVENT_LEASE_RENEWED, EVENT_LEASE_REVOKED, lease_event
from ._checks import stands
from ._gate import Gate, governed
from ._state import GOVERNED_RUN, NO_LEASE, LeaseState, value_digest
from ._steps import GovernedSteps, first_error

if TYPE_CHECKING:
    from ._lease import Lease, LeaseClaims

__all__ = ["Run"]


def _urgency(state: LeaseState) -> tuple[int, float]:
    return state.lease.claims.depth, state.deadline


def _depth(state: LeaseState) -> int:
    return state.lease.claims.depth


class Run(GovernedSteps):
    """State and control of one run (created and driven by the runtime)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def drive(self, on_exit: Callable[[Run], None]) -> None:
        """Run the root agent to its end, record how it ended, then ``on_exit(self)``."""
        # Every task of the run descends from this one and so inherits this context: the
        # runtime knows when a call into it comes from governed code (see GOVERNED_RUN).
        GOVERNED_RUN.set(self.id)
        try:
            with anyio.CancelScope(deadline=self.hard_deadline) as scope:
                self.scope = scope
                if self.stop is not None:
                    scope.cancel()
                async with anyio.create_task_group() as tg:
                    self.tg = tg
                    # The root agent runs in a task of its own, under its one gate (see
                    # ``_gate``): nothing of this frame's scopes is inside the wrapper.
                    tg.start_soon(self._root)
        except BaseException as exc:  # classified below; the run's outcome, not a crash
            self._classify(exc)
        finally:
            self.tg = None
            if (
                self.stop is None
                and self.error is None
                and self.scope is not None
                and self.scope.cancelled_caught
            ):
                self._classify(anyio.get_cancelled_exc_class()())
            with anyio.CancelScope(shield=True):
                await self.foreign.drain()  # foreign calls in other tasks record their end
                await self._finish()
            on_exit(self)
            self.done.set()

    async def _root(self) -> None:
        gate = Gate(self, NO_LEASE, self.agent.qualified)
        body = self.invoke_agent(None, self.agent, self.args, self.kwargs, gate=gate, fresh=True)
        self.result = await governed(body, gate)

    def _classify(self, exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            exc = first_error(exc)
        if self.stop is not None:
            return
        if isinstance(exc, GovernanceViolation):
            if exc.run_id is None:
                exc.run_id = self.id
            if exc.source in ("policy", "approval"):
                self.stop = exc  # a refused root step: recorded already, nothing to cancel
                return
            self.fail(exc)
            return
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            if self.cancelled_reason is None and self.stop is None:
                self.cancelled_reason = "cancelled"
            self.error = exc
            return
        self.error = exc

    async def _finish(self) -> None:
        """Record how the run ended and close its evidence (checkpoint, fsync)."""
        if self.stop is not None:
            fields = {
                "status": "violation",
                "error": type(self.stop).__name__,
                "check": self.stop.check,
                "reason": self.stop.reason,
                "result": "",
            }
        elif self.cancelled_reason is not None:
            fields = {
                "status": "cancelled",
                "error": "",
                "check": "",
                "reason": self.cancelled_reason,
                "result": "",
            }
        elif self.error is not None:
            fields = {
                "status": "error",
                "error": type(self.error).__name__,
                "check": "",
                "reason": str(self.error)[:500],
                "result": "",
            }
        else:
            fields = {
                "status": "ok",
                "error": "",
                "check": "",
                "reason": "",
                "result": value_digest(self.result),
            }
        self.span.end(self.stop or self.error)
        self.record_stopped()
        self.try_record(RUN_END, fields)
        try:
            await self.services.close_ledger(self.ledger, self.write_attestation)
        except GovernanceViolation as exc:
            if self.stop is None and self.error is None:
                exc.run_id = self.id
                self.stop = exc

    # -- watchdog duties ------------------------------------------------------------------

    def watchdog_pass(self, now: float) -> bool:
        """Renew leases that are still allowed; check ttl and wall-time budget.

        About ``renew_per_tick`` leases are renewed per pass, parents before their children
        (a child's renewal is capped at its parent's expiry), then the earliest deadline: a
        fan-out whose leases all came due together is renewed over several short passes
        instead of one long one. Leases with
        less than half the renewal margin left are renewed in this pass whatever the budget.
        Returns whether leases due for renewal are left (the watchdog comes back sooner).
        """
        if self.stop is not None:
            return False
        over = self.tracker.check_wall(now)
        if over is not None:
            self.fail(PolicyDenied(over[1], check=over[0], source="watchdog"))
            return False
        self.revalidate()
        if self.stop is not None:
            return False
        cfg = self.services.config
        horizon = now + cfg.lease_seconds * cfg.renew_fraction
        hard = self.hard_deadline
        due = [
            s
            for s in self.leases.values()
            if s.deadline <= horizon and s.deadline < hard and s.active and not s.revoked
        ]
        if not due:
            return False
        budget = cfg.renew_per_tick
        if len(due) <= budget:
            batch = due
        else:
            # Past the budget only what would otherwise expire soon: a longer pass is
            # better than a healthy run stopped for a renewal it did not get in time.
            critical = now + cfg.lease_seconds * cfg.renew_fraction / 2
            # Parents first: a child's renewal is capped at its parent's expiry, so renewing
            # children of a parent left for a later pass would extend nothing.
            batch = heapq.nsmallest(budget, due, key=_urgency)
            chosen = set(map(id, batch))
            batch += [s for s in due if id(s) not in chosen and s.deadline <= critical]
        self.renew_leases(batch)
        if self.stop is not None:
            return False
        return len(due) > len(batch)

    def renew_leases(self, states: list[LeaseState]) -> None:
        """Renew those of ``states`` still allowed: one signature per delegation depth.

        Parents come first: a child's renewal is capped at, and binds, its parent's current
        generation.
        """
        for _, level in itertools.groupby(sorted(states, key=_depth), key=_depth):
            self._renew_level(list(level))
            if self.stop is not None:
                return

    def _renew_level(self, states: list[LeaseState]) -> None:
        drafts: list[tuple[LeaseState, Lease | None, LeaseClaims]] = []
        for state in states:
            renewal = self._draft_renewal(state)
            if self.stop is not None:
                return
            if renewal is not None:
                drafts.append((state, *renewal))
        if not drafts:
            return
        try:
            leases = self.issuer.sign_and_record([d for _, _, d in drafts], "renewed")
        except GovernanceViolation:
            return
        now_us = self.lease_clock_us()
        for (state, parent, _), lease in zip(drafts, leases, strict=True):
            state.adopt(lease, self.hard_deadline, now_us, parent)
            span = state.step.span if state.step is not None else self.span
            span.event(EVENT_LEASE_RENEWED, lease_event(state.id, generation=lease.claims.gen))

    def _draft_renewal(self, state: LeaseState) -> tuple[Lease | None, LeaseClaims] | None:
        """The claims of ``state``'s next generation, if its step is still allowed."""
        step = state.step
        if step is not None:
            decision = self.redecide(self.gov.policy, step)
            if decision is None:
                return None
            if not stands(decision, step):
                self.fail(
                    PolicyDenied(
                        f"renewal refused: {decision.reason}",
                        lease_id=state.id,
                        check=f"rule:{decision.rule_id}",
                        task=step.target.qualified,
                        source="watchdog",
                    )
                )
                return None
        services = self.services
        now_us = self.lease_clock_us()
        parent = state.parent.lease if state.parent is not None else None
        if parent is not None and parent.claims.exp <= state.lease.claims.exp:
            # Capped at the parent's expiry, which it already has: nothing to extend until
            # the parent is renewed (parents come first in a pass), so no signature now.
            return None
        try:
            draft = services.authority.draft_renewal(
                state.lease,
                expires_us=now_us + int(services.config.lease_seconds * 1e6),
                hard_deadline_us=self.hard_deadline_us,
                parent=parent,
                policy=self.gov.policy.digest,
                epoch=self.gov.epoch,
                now_us=now_us,
            )
        except GovernanceViolation as exc:
            exc.run_id = self.id
            self.fail(exc)
            return None
        return parent, draft

    def revoke_lease(self, lease_id: str, reason: str, by: str) -> None:
        """Revoke a lease and its descendants; the run stops (fail closed).

        Revoking the root lease revokes every lease of the run: no lease is marked one by
        one — the run's stop, which every gate and the watchdog read first, covers them all.
        """
        state = self.leases.get(lease_id)
        authority = self.services.authority
        if state is not None and state.parent is None:
            authority.revoke(lease_id, subtree=False)
            state.revoked = True
        else:
            for lid in authority.revoke(lease_id):
                live = self.leases.get(lid)
                if live is not None:
                    live.revoked = True
        self.try_record(LEASE_REVOKED, {"lease": lease_id, "reason": reason, "by": by})
        self.span.event(EVENT_LEASE_REVOKED, lease_event(lease_id, reason=reason))
        task = state.lease.claims.sub if state is not None else None
        self.fail(
            LeaseRevoked(
                f"revoked: {reason}", lease_id=lease_id, check="lease.revoked", task=task, source=by
            )
        )

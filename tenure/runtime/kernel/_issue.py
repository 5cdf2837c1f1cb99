"""Issuing a run's leases: drafted per step, signed and recorded per batch.

A fan-out of thousands of agents needs thousands of leases at once; an Ed25519 signature
each would cost more than the rest of every step. The :class:`LeaseIssuer` of a run
collects the leases drafted during one turn of the event loop and signs them together at
the start of the next (:meth:`~._authority.LeaseAuthority.sign_batch`: one signature over
their digests), recording one ``lease.batch`` record for them all. Renewals of a watchdog
pass are batched the same way.

Invariants:

- **Signed before it runs.** A step waits for its lease's batch to be signed and recorded
  (the ``lease.batch`` record precedes the step's ``step.start``, which reaches the OS
  before the body runs); a lease whose batch could not be recorded is never handed out.
- A lease that travels to another process (a delegation to a pool) is signed on its own
  (a DSSE envelope, recorded as ``lease.issued``): the worker verifies it alone; the
  ancestors its chain carries are signed on their own when it is sent (``_delegate``).
- A lease's local deadline is computed when it is adopted, from the run's clock at that
  moment, never from the time it was drafted: waiting for the batch extends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...crypto import b64e
from ...evidence._batch import MAX_BATCH
from ...evidence._format import LEASE_BATCH, LEASE_ISSUED
from ._state import LeaseState, Step

if TYPE_CHECKING:
    from ...lineage._spans import SpanHandle
    from ._control import RunServices
    from ._lease import Lease, LeaseClaims

__all__ = ["IssuerHost", "LeaseIssuer"]


class IssuerHost(Protocol):
    """What the issuer needs of its run."""

    id: str
    principal: str
    services: RunServices
    hard_deadline: float
    hard_deadline_us: int
    attestation: str
    leases: dict[str, LeaseState]
    stop: GovernanceViolation | None

    def lease_clock_us(self) -> int:
        """Now on the run's lease clock, in µs."""
        ...

    def record(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
    ) -> int:
        """Append a record; a failed append stops the run and raises the stop."""
        ...

    def fail(self, exc: GovernanceViolation) -> GovernanceViolation:
        """Stop the run fail closed."""
        ...

    def stop_error(self) -> GovernanceViolation:
        """The run's stop, ready to raise."""
        ...


class LeaseIssuer:
    """The leases of one run (see the module docstring)."""

    __slots__ = ("_pending", "_run", "_scheduled")

    def __init__(self, run: IssuerHost) -> None:
        self._run = run
        self._pending: list[tuple[LeaseClaims, asyncio.Future[Lease | None]]] = []
        self._scheduled = False

    async def issue(
        self, step: Step, holder: LeaseState | None, granted: frozenset[str]
    ) -> LeaseState:
        """The lease ``step`` runs under (a child of ``holder``, or the run's root lease)."""
        run = self._run
        services = run.services
        authority = services.authority
        now_us = run.lease_clock_us()
        expires = now_us + int(services.config.lease_seconds * 1e6)
        if holder is None:
            draft = authority.draft_root(
                run_id=run.id,
                principal=run.principal,
                subject=step.target.qualified,
                scopes=granted,
                expires_us=expires,
                hard_deadline_us=run.hard_deadline_us,
                policy=services.gov.policy.digest,
                attestation=run.attestation,
                epoch=services.gov.epoch,
                now_us=now_us,
            )
        else:
            draft = authority.draft_child(
                holder.lease,
                subject=step.target.qualified,
                scopes=granted,
                expires_us=expires,
                now_us=now_us,
            )
        if step.pool is not None:
            lease = authority.sign_one(draft)
            self._record_single(lease)
        else:
            signed = await self._signed(draft)
            if signed is None:  # its batch could not be recorded: the run has stopped
                raise run.stop_error()
            lease = signed
        state = LeaseState(lease, holder, run.hard_deadline, run.lease_clock_us())
        run.leases[lease.id] = state
        step.lease = state
        return state

    def _signed(self, draft: LeaseClaims) -> asyncio.Future[Lease | None]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Lease | None] = loop.create_future()
        self._pending.append((draft, waiter))
        if not self._scheduled:
            self._scheduled = True
            # Next turn: every step that drafts a lease in this one joins the batch.
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        live = [(d, w) for d, w in pending if not w.done()]  # a cancelled waiter is skipped
        if not live:
            return
        leases: Sequence[Lease | None]
        try:
            leases = self.sign_and_record([d for d, _ in live], "issued")
        except GovernanceViolation:
            leases = [None] * len(live)  # the record failed: the run stopped
        for (_, waiter), lease in zip(live, leases, strict=True):
            if not waiter.done():
                waiter.set_result(lease)

    def sign_and_record(self, drafts: Sequence[LeaseClaims], purpose: str) -> list[Lease]:
        """Sign ``drafts`` in one batch and record it; the leases.

        Raises the run's stop when the batch cannot be signed or recorded.
        """
        run = self._run
        try:
            leases, payloads = run.services.authority.sign_batch(run.id, drafts)
        except Exception as exc:  # a signing fault: no lease of this batch may be used
            raise run.fail(
                GovernanceUnavailable(
                    f"the lease batch could not be signed: {type(exc).__name__}: {exc}",
                    check="lease.signature",
                    source="authority",
                )
            ) from exc
        batch = leases[0].batch
        assert batch is not None
        run.record(
            LEASE_BATCH,
            {
                "purpose": purpose,
                "envelope": batch.envelope,
                "leases": [b64e(payload) for payload in payloads],
            },
            flush=False,
        )
        return leases

    def _record_single(self, lease: Lease) -> None:
        c = lease.claims
        self._run.record(
            LEASE_ISSUED,
            {
                "lease": c.lid,
                "parent": c.parent_lid or "",
                "subject": c.sub,
                "scopes": list(c.scopes),
                "exp": c.exp,
                "envelope": lease.envelope,
            },
            flush=False,
        )

    def release(self, state: LeaseState) -> None:
        """A finished step's lease is no longer watched (its records are on disk)."""
        state.step = None  # step and lease state refer to each other: freed now, not by gc
        lease = state.lease
        run = self._run
        run.leases.pop(lease.claims.lid, None)
        run.services.authority.forget(lease)

"""The small Protocols behind which the engine keeps its shared governance state.

A :class:`Backend` bundles one implementation of each. The in-process one
(:class:`~tenure.runtime.backends.MemoryBackend`) is what a ``Runtime()`` without a backend
uses; the PostgreSQL one (:class:`~tenure.runtime.backends.PgBackend`) is shared by every
process pointed at the same database.

Contract every implementation keeps (the tests in ``tests/distributed`` run one suite of
properties against each):

- **Governance log**: append-only; revisions are 1, 2, 3, ... with no gap, and a reader
  that resumes after revision ``r`` sees every entry after ``r`` exactly once, in
  revision order. ``wait`` is only a hint: the events it returns (those that came with
  their notification, in order from ``after + 1``) may be applied without a read, and a
  reader reads the log from where it is for everything else, so a lost notification
  delays an event, never drops it.
- **Liveness**: a member's expiry is kept by the backend's clock; ``renew`` extends it
  only while it is unexpired and its generation current, and answers the log's head
  revision at that moment; a reaper bumps a lapsed member's generation exactly once
  (any number of concurrent reapers), marks its claimed tasks ``lost`` and logs
  ``worker.lost``.
- **Fencing**: every write that takes a :class:`Member` lands only while that member is
  live with that generation, otherwise it raises ``GovernanceUnavailable`` with check
  ``backend.fenced`` and changes nothing.
- **Approvals**: at most one decision per request (compare-and-set); the loser of a race
  learns it lost (``None``) and nothing it sent is stored.
- **Budgets**: a ``reserve`` debit is refused, taking nothing, when it would pass a limit.
- **Queue**: a queued task is claimed by at most one member; only that member (in that
  generation) can finish it.
- **Evidence**: a segment has one writer; a batch lands only at the segment's current
  size (no gap, no overwrite) and atomically with its debit.

A backend that cannot be reached raises ``GovernanceUnavailable`` (check
``backend.unreachable``), never an exception of its driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._types import (
    ApprovalRecord,
    Batch,
    ClaimedTask,
    Debit,
    Decision,
    GovEvent,
    LostMember,
    Member,
    Refusal,
    SegmentInfo,
    TaskOutcome,
    TaskState,
)

__all__ = [
    "ApprovalStore",
    "Backend",
    "BudgetStore",
    "DelegationQueue",
    "EvidenceSink",
    "GovernanceLog",
    "Liveness",
    "PolicyStore",
]


class GovernanceLog(Protocol):
    """Revocations, policy epochs, approval decisions and lost workers, in one order."""

    async def append(self, kind: str, data: Mapping[str, Any]) -> int:
        """Append an event (``kind`` one of ``EVENT_KINDS``); its revision."""
        ...

    async def read(self, after: int, upto: int | None = None) -> list[GovEvent]:
        """Every event with ``after < revision <= upto`` (``upto=None``: to the head)."""
        ...

    async def head(self) -> int:
        """The latest revision (0 for an empty log)."""
        ...

    async def wait(self, after: int, max_wait: float) -> list[GovEvent]:
        """Return once the head may be past ``after``, or after ``max_wait`` seconds.

        Returns the events after ``after`` that this process already holds (delivered with
        their notification), revisions ``after + 1, after + 2, ...`` without a gap; an empty
        list says nothing of the log: read it.
        """
        ...


class PolicyStore(Protocol):
    """Policy sets by digest, so that every process loads the very set an epoch names."""

    async def put_policy(self, digest: str, documents: Sequence[Mapping[str, str]]) -> None:
        """Store a policy set's documents (``name``, ``text``) under its digest."""
        ...

    async def get_policy(self, digest: str) -> list[dict[str, str]] | None:
        """The documents stored under ``digest``, or ``None``."""
        ...


class Liveness(Protocol):
    """One liveness lease per process, expiring on the backend's clock."""

    async def register(
        self, name: str, pool: str | None, ttl: float, info: Mapping[str, Any]
    ) -> Member:
        """Join (or rejoin under a new generation); the member's lease runs ``ttl`` s."""
        ...

    async def renew(self, member: Member) -> int:
        """Extend the lease by its ttl; the log head at that moment.

        Raises ``GovernanceUnavailable`` with check ``worker.lost`` when the lease lapsed
        or the generation is no longer current (the member must register again).
        """
        ...

    async def reap(self) -> list[LostMember]:
        """Declare every lapsed member lost (idempotent; any member may run it)."""
        ...

    async def leave(self, member: Member) -> None:
        """Leave cleanly: no longer live, nothing of it is reaped later."""
        ...


class ApprovalStore(Protocol):
    """Requests waiting for a person; exactly one decision each."""

    async def request(self, member: Member, record: ApprovalRecord) -> None:
        """File a new request (fenced)."""
        ...

    async def decide(
        self,
        request_id: str,
        decision: Decision,
        *,
        approver: str,
        reason: str = "",
        envelope: Mapping[str, Any] | None = None,
    ) -> ApprovalRecord | None:
        """Decide a pending request; the decided record, or ``None`` if it was decided
        already (or does not exist). The decision is logged (``approval.decided``)."""
        ...

    async def get(self, request_id: str) -> ApprovalRecord | None:
        """One request, decided or not."""
        ...

    async def pending(self) -> list[ApprovalRecord]:
        """Undecided requests, oldest first."""
        ...


class BudgetStore(Protocol):
    """Each run's budget counters and rate windows, shared by every process of the run."""

    async def debit(self, member: Member, debit: Debit) -> Refusal | None:
        """Take ``debit`` (fenced); ``None`` when granted, else why it was refused."""
        ...

    async def used(self, run_id: str) -> dict[str, float]:
        """The run's counters so far."""
        ...


class DelegationQueue(Protocol):
    """Delegated agent invocations waiting for a worker of a pool."""

    async def enqueue(
        self, member: Member, pool: str, run_id: str, payload: Mapping[str, Any]
    ) -> str:
        """Queue a task for ``pool`` (fenced); its id."""
        ...

    async def claim(self, member: Member, pool: str) -> ClaimedTask | None:
        """Take the oldest queued task of ``pool`` (fenced), or ``None``."""
        ...

    async def wait_queued(self, pool: str, max_wait: float) -> None:
        """Return when a task may be claimable in ``pool``, or after ``max_wait``."""
        ...

    async def finish(
        self,
        member: Member,
        task_id: str,
        state: TaskState,
        *,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a claimed task's end (fenced: only its claimer, in that generation)."""
        ...

    async def outcome(self, task_id: str) -> TaskOutcome:
        """Where the task stands (``KeyError`` if there is no such task)."""
        ...

    async def wait_outcome(self, task_id: str, max_wait: float) -> TaskOutcome:
        """The outcome once the task ended, or where it stands after ``max_wait``."""
        ...


class EvidenceSink(Protocol):
    """Segments of signed evidence records, one writer each."""

    async def open_segment(self, member: Member, segment: SegmentInfo) -> None:
        """Create an empty segment written by ``member`` (fenced)."""
        ...

    async def commit(
        self, member: Member, batch: Batch, debit: Debit | None = None
    ) -> Refusal | None:
        """Append ``batch`` (fenced), taking ``debit`` in the same transaction.

        When the debit is refused, ``batch.instead`` is appended in place of
        ``batch.lines`` and the refusal returned. A batch not at the segment's current
        size raises ``GovernanceUnavailable`` (check ``evidence.segment``).
        """
        ...

    async def size(self, segment_id: str) -> int:
        """How many records of the segment are durable (to reconcile after a lost ack)."""
        ...

    async def segments(self, run_id: str) -> list[SegmentInfo]:
        """Every segment of a run, in the order they were opened."""
        ...

    async def records(self, segment_id: str) -> tuple[list[bytes], str | None]:
        """A segment's lines in order and its latest checkpoint note."""
        ...


class Backend(Protocol):
    """One implementation of every Protocol above, and its lifecycle."""

    @property
    def url(self) -> str:
        """Where it is (credentials removed from errors, not from here)."""
        ...

    @property
    def log(self) -> GovernanceLog:
        """The governance log."""
        ...

    @property
    def policies(self) -> PolicyStore:
        """Policy sets by digest."""
        ...

    @property
    def liveness(self) -> Liveness:
        """Member liveness."""
        ...

    @property
    def approvals(self) -> ApprovalStore:
        """Approval requests and decisions."""
        ...

    @property
    def budgets(self) -> BudgetStore:
        """Shared budgets and rate limits."""
        ...

    @property
    def queue(self) -> DelegationQueue:
        """The delegation queue."""
        ...

    @property
    def evidence(self) -> EvidenceSink:
        """Evidence segments."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...

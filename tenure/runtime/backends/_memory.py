"""The in-process backend: every Protocol of :mod:`._protocols` in one process's memory.

What a ``Runtime()`` without a backend uses, so one process behaves exactly as it always
has: nothing is shared, nothing needs a server. It keeps the same contract as the
PostgreSQL backend (one property suite runs against both), with the process's monotonic
clock standing in for the server's. It is used from one event loop (not thread-safe).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from time import monotonic
from typing import Any

import anyio

from ..._errors import GovernanceUnavailable
from ._types import (
    EVENT_KINDS,
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

__all__ = ["MemoryBackend"]


def fenced(member: Member, why: str) -> GovernanceUnavailable:
    """The refusal of a write by a member that is not live in that generation."""
    return GovernanceUnavailable(
        f"write by {member.name or member.id} (generation {member.generation}) refused: {why}",
        check="backend.fenced",
        source="backend",
    )


def lost(member: Member, why: str) -> GovernanceUnavailable:
    """A renewal refused because the member's liveness lapsed."""
    return GovernanceUnavailable(
        f"{member.name or member.id} (generation {member.generation}) is no longer live: {why}",
        check="worker.lost",
        source="backend",
    )


def check_kind(kind: str) -> None:
    """Refuse an event kind the log does not hold."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"governance event kind {kind!r} is not one of {sorted(EVENT_KINDS)}")


def check_step_debit(debit: Debit) -> None:
    """Refuse a debit an evidence commit cannot take (a step's start reserves)."""
    if debit.mode != "reserve":
        raise ValueError(f"a commit takes a step's reserve debit, not a {debit.mode!r} one")


def check_plain_debit(debit: Debit) -> None:
    """Refuse live tasks outside an evidence commit (no segment would release them)."""
    if debit.enter:
        raise ValueError("live governed tasks are taken only with an evidence commit")


def over_limit(used: Mapping[str, float], debit: Debit) -> tuple[dict[str, float], Refusal | None]:
    """The counters after ``debit`` and the first limit it passes (shared by backends'
    tests and the in-process store; the PostgreSQL store does the same in SQL)."""
    after = dict(used)
    refusal = None
    for counter, amount in debit.amounts.items():
        after[counter] = after.get(counter, 0) + amount
        limit = debit.limits.get(counter)
        if refusal is None and limit is not None and after[counter] > limit:
            refusal = Refusal(
                f"budget.max_{counter}",
                f"run exceeded max_{counter}={limit:g} across all its workers "
                f"({counter} would be {after[counter]:g})",
            )
    return after, refusal


@dataclass(slots=True)
class _Member:
    member: Member
    ttl: float
    expires: float
    state: str  # live | lost | left
    info: Mapping[str, Any]


@dataclass(slots=True)
class _Task:
    id: str
    pool: str
    run_id: str
    payload: Mapping[str, Any]
    enqueued_by: str = ""
    state: TaskState = "queued"
    claimer: Member | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None


class MemoryBackend:
    """See the module docstring. Implements :class:`~._protocols.Backend`."""

    url = "memory:"

    def __init__(self, clock: Any = monotonic) -> None:
        self._clock = clock
        self._events: list[GovEvent] = []
        self._policies: dict[str, list[dict[str, str]]] = {}
        self._members: dict[str, _Member] = {}
        self._approvals: dict[str, ApprovalRecord] = {}
        self._used: dict[str, dict[str, float]] = {}
        self._rates: dict[tuple[str, str], deque[float]] = {}
        self._tasks: dict[str, _Task] = {}
        self._segments: dict[str, tuple[SegmentInfo, list[bytes], list[str | None]]] = {}
        # (run, segment) -> (writer member id, live governed tasks)
        self._live: dict[tuple[str, str], tuple[str, int]] = {}
        self._changed = anyio.Event()
        self.log = self.policies = self.liveness = self.approvals = self
        self.budgets = self.queue = self.evidence = self

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_change(self, max_wait: float) -> None:
        with anyio.move_on_after(max_wait):
            await self._changed.wait()

    def _fence(self, member: Member) -> None:
        m = self._members.get(member.id)
        if m is None or m.member.generation != member.generation or m.state != "live":
            raise fenced(member, "not the live generation")
        if self._clock() >= m.expires:
            raise fenced(member, "its liveness lease expired")

    async def close(self) -> None:
        """Nothing to release."""

    # -- governance log -------------------------------------------------------------------

    async def append(self, kind: str, data: Mapping[str, Any]) -> int:
        check_kind(kind)
        event = GovEvent(len(self._events) + 1, kind, dict(data))
        self._events.append(event)
        self._notify()
        return event.revision

    async def read(self, after: int, upto: int | None = None) -> list[GovEvent]:
        end = len(self._events) if upto is None else min(upto, len(self._events))
        return self._events[max(after, 0) : end]

    async def head(self) -> int:
        return len(self._events)

    async def wait(self, after: int, max_wait: float) -> list[GovEvent]:
        if len(self._events) <= after:
            await self._wait_change(max_wait)
        return self._events[max(after, 0) :]

    async def put_policy(self, digest: str, documents: Sequence[Mapping[str, str]]) -> None:
        self._policies.setdefault(digest, [dict(d) for d in documents])

    async def get_policy(self, digest: str) -> list[dict[str, str]] | None:
        return self._policies.get(digest)

    # -- liveness -------------------------------------------------------------------------

    async def register(
        self, name: str, pool: str | None, ttl: float, info: Mapping[str, Any]
    ) -> Member:
        if not ttl > 0:
            raise ValueError(f"liveness ttl must be positive seconds, got {ttl!r}")
        await self.reap()  # a lapsed holder of the name is declared lost first
        prior = next((m for m in self._members.values() if name and m.member.name == name), None)
        if prior is not None and prior.state == "live":
            raise ValueError(
                f"a member named {name!r} is live already: two processes cannot share a "
                "name (give each worker its own --name)"
            )
        if prior is not None:
            generation, member_id = prior.member.generation + 1, prior.member.id
        else:
            generation, member_id = 1, "m_" + secrets.token_hex(8)
        member = Member(member_id, generation, name, pool)
        self._members[member_id] = _Member(member, ttl, self._clock() + ttl, "live", dict(info))
        return member

    async def renew(self, member: Member) -> int:
        m = self._members.get(member.id)
        if m is None or m.member.generation != member.generation or m.state != "live":
            raise lost(member, "its generation is no longer current")
        now = self._clock()
        if now >= m.expires:
            raise lost(member, "its liveness lease lapsed before it was renewed")
        m.expires = now + m.ttl
        return len(self._events)

    async def reap(self) -> list[LostMember]:
        now = self._clock()
        found = []
        for m in self._members.values():
            if m.state != "live" or now < m.expires:
                continue
            m.state = "lost"
            old = m.member
            m.member = replace(old, generation=old.generation + 1)
            tasks = []
            for task in self._tasks.values():
                if task.state == "claimed" and task.claimer == old:
                    task.state = "lost"
                    tasks.append(task.id)
            self._drop_live(old.id)
            lapsed = LostMember(old.id, old.generation, old.name, old.pool, tuple(tasks))
            await self.append(
                "worker.lost",
                {
                    "member": old.id,
                    "generation": old.generation,
                    "name": old.name,
                    "tasks": list(tasks),
                },
            )
            found.append(lapsed)
        return found

    async def leave(self, member: Member) -> None:
        m = self._members.get(member.id)
        if m is not None and m.member == member and m.state == "live":
            m.state = "left"
            self._drop_live(member.id)

    def _drop_live(self, member_id: str) -> None:
        for key in [k for k, (m, _) in self._live.items() if m == member_id]:
            del self._live[key]

    # -- approvals ------------------------------------------------------------------------

    async def request(self, member: Member, record: ApprovalRecord) -> None:
        self._fence(member)
        if record.id in self._approvals:
            raise ValueError(f"approval request {record.id!r} exists already")
        self._approvals[record.id] = replace(record, decision=None)

    async def decide(
        self,
        request_id: str,
        decision: Decision,
        *,
        approver: str,
        reason: str = "",
        envelope: Mapping[str, Any] | None = None,
    ) -> ApprovalRecord | None:
        record = self._approvals.get(request_id)
        if record is None or record.decision is not None:
            return None
        decided = replace(
            record, decision=decision, approver=approver, reason=reason, envelope=envelope
        )
        self._approvals[request_id] = decided
        await self.append("approval.decided", {"request": request_id, "decision": decision})
        return decided

    async def get(self, request_id: str) -> ApprovalRecord | None:
        return self._approvals.get(request_id)

    async def pending(self) -> list[ApprovalRecord]:
        waiting = (r for r in self._approvals.values() if r.decision is None)
        return sorted(waiting, key=lambda r: r.requested_at_us)

    # -- budgets --------------------------------------------------------------------------

    async def debit(self, member: Member, debit: Debit) -> Refusal | None:
        check_plain_debit(debit)
        self._fence(member)
        return self._debit(debit)

    def _debit(self, debit: Debit) -> Refusal | None:
        used = self._used.setdefault(debit.run_id, {})
        after, refusal = over_limit(used, debit)
        now = self._clock()
        if debit.mode == "reserve":
            for w in debit.rates:
                stamps = self._rates.setdefault((debit.run_id, w.key), deque())
                while stamps and stamps[0] <= now - w.per:
                    stamps.popleft()
                if refusal is None and len(stamps) >= w.count:
                    refusal = Refusal(
                        f"ratelimit.{w.key}",
                        f"rate limit {w.key}={w.count}/{w.per:g}s exceeded across all "
                        f"workers of run {debit.run_id}",
                    )
            if refusal is not None:
                return refusal
            for w in debit.rates:
                self._rates[(debit.run_id, w.key)].append(now)
        used.update(after)
        return refusal

    async def used(self, run_id: str) -> dict[str, float]:
        return dict(self._used.get(run_id, {}))

    # -- delegation queue -----------------------------------------------------------------

    async def enqueue(
        self, member: Member, pool: str, run_id: str, payload: Mapping[str, Any]
    ) -> str:
        self._fence(member)
        task = _Task("task_" + secrets.token_hex(8), pool, run_id, dict(payload), member.id)
        self._tasks[task.id] = task
        self._notify()
        return task.id

    async def claim(self, member: Member, pool: str) -> ClaimedTask | None:
        self._fence(member)
        task = next(
            (t for t in self._tasks.values() if t.pool == pool and t.state == "queued"), None
        )
        if task is None:
            return None
        task.state, task.claimer = "claimed", member
        self._notify()
        by = self._members.get(task.enqueued_by)
        registered = dict(by.info) if by is not None else {}
        return ClaimedTask(
            task.id,
            task.pool,
            task.run_id,
            task.payload,
            task.enqueued_by,
            registered,
            len(self._events),
        )

    async def wait_queued(self, pool: str, max_wait: float) -> None:
        if not any(t.pool == pool and t.state == "queued" for t in self._tasks.values()):
            await self._wait_change(max_wait)

    async def finish(
        self,
        member: Member,
        task_id: str,
        state: TaskState,
        *,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        if state not in ("done", "failed"):
            raise ValueError(f"a task finishes as 'done' or 'failed', not {state!r}")
        self._fence(member)
        task = self._tasks.get(task_id)
        if task is None or task.state != "claimed" or task.claimer != member:
            raise fenced(member, f"task {task_id} is not claimed by it")
        task.state, task.result, task.error = state, result, error
        self._notify()

    async def outcome(self, task_id: str) -> TaskOutcome:
        task = self._tasks[task_id]
        claimer = task.claimer.id if task.claimer is not None else None
        return TaskOutcome(task.id, task.state, claimer, task.result, task.error)

    async def wait_outcome(self, task_id: str, max_wait: float) -> TaskOutcome:
        with anyio.move_on_after(max_wait):
            while (await self.outcome(task_id)).state in ("queued", "claimed"):
                await self._changed.wait()
        return await self.outcome(task_id)

    # -- evidence -------------------------------------------------------------------------

    async def open_segment(self, member: Member, segment: SegmentInfo) -> None:
        self._fence(member)
        if segment.id in self._segments:
            raise ValueError(f"evidence segment {segment.id!r} exists already")
        self._segments[segment.id] = (segment, [], [None])

    async def commit(
        self, member: Member, batch: Batch, debit: Debit | None = None
    ) -> Refusal | None:
        self._fence(member)
        found = self._segments.get(batch.segment)
        if found is None or found[0].member != member.id:
            raise fenced(member, f"segment {batch.segment} is not its own")
        _, lines, checkpoint = found
        if batch.first != len(lines):
            raise GovernanceUnavailable(
                f"segment {batch.segment} holds {len(lines)} records, "
                f"a batch starting at {batch.first} would leave a gap or overwrite",
                check="evidence.segment",
                source="backend",
            )
        run, key = found[0].run_id, (found[0].run_id, batch.segment)
        if batch.close:
            self._live.pop(key, None)
        elif batch.leave and key in self._live:
            writer, live = self._live[key]
            self._live[key] = (writer, max(live - batch.leave, 0))
        refusal = None
        if debit is not None:
            check_step_debit(debit)
            refusal = self._enter(run, key, member, debit)
        lines.extend(batch.instead if refusal is not None else batch.lines)
        if batch.checkpoint is not None:
            checkpoint[0] = batch.checkpoint
        return refusal

    def _enter(
        self, run: str, key: tuple[str, str], member: Member, debit: Debit
    ) -> Refusal | None:
        if debit.enter and debit.max_live is not None:
            live = sum(n for (r, _), (_, n) in self._live.items() if r == run) + debit.enter
            if live > debit.max_live:
                return Refusal(
                    "budget.max_concurrency",
                    f"run exceeded max_concurrency={debit.max_live} across all its workers "
                    f"({live} live governed tasks)",
                )
        refusal = self._debit(replace(debit, run_id=run))
        if refusal is None and debit.enter:
            self._live[key] = (member.id, self._live.get(key, ("", 0))[1] + debit.enter)
        return refusal

    async def size(self, segment_id: str) -> int:
        return len(self._segments[segment_id][1])

    async def segments(self, run_id: str) -> list[SegmentInfo]:
        return [info for info, _, _ in self._segments.values() if info.run_id == run_id]

    async def records(self, segment_id: str) -> tuple[list[bytes], str | None]:
        _, lines, checkpoint = self._segments[segment_id]
        return list(lines), checkpoint[0]

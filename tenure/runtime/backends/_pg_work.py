"""Approvals, shared budgets and the delegation queue, in PostgreSQL.

- An approval is decided by one compare-and-set (``... WHERE decision IS NULL``) in the
  same transaction as its ``approval.decided`` log entry: two deciders on two hosts, or a
  decider racing the waiter's timeout, produce exactly one decision.
- A debit locks the run's row, so every worker of a run is counted against one set of
  counters; a ``reserve`` debit that would pass a limit takes nothing.
- A task is claimed with ``FOR UPDATE SKIP LOCKED`` (claimers never wait on each other)
  and finished only by its claimer in the generation that claimed it; ``tenure_queue``
  and ``tenure_task`` notifications wake claimers and waiters, polling backs them up.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import anyio
import asyncpg

from ._memory import check_plain_debit, fenced
from ._pg_db import PgDb
from ._types import (
    ApprovalRecord,
    ClaimedTask,
    Debit,
    Decision,
    Member,
    Refusal,
    TaskOutcome,
    TaskState,
)

__all__ = ["PgApprovals", "PgBudgets", "PgQueue", "debit_args", "refusal_of"]


def debit_args(
    debit: Debit,
) -> tuple[str, dict[str, float], dict[str, float], list[dict[str, Any]], bool]:
    """The SQL arguments of a debit (run, amounts, limits, rate windows, reserve)."""
    rates = [{"key": w.key, "count": w.count, "per": w.per} for w in debit.rates]
    return (
        debit.run_id,
        dict(debit.amounts),
        dict(debit.limits),
        rates,
        debit.mode == "reserve",
    )


def refusal_of(text: str | None) -> Refusal | None:
    """``tenure_debit``'s answer as a :class:`Refusal` (``None``: granted)."""
    if text is None:
        return None
    check, _, reason = text.partition("\t")
    return Refusal(check, reason)


_APPROVAL_COLUMNS = "id, run_id, request, requested_at_us, decision, approver, reason, envelope"


def _approval(row: asyncpg.Record) -> ApprovalRecord:
    req = row["request"]
    return ApprovalRecord(
        id=row["id"],
        run_id=row["run_id"],
        principal=req["principal"],
        action=req["action"],
        target=req["target"],
        rule_id=req["rule_id"],
        step=req["step"],
        args_digest=req["args_digest"],
        requested_at_us=row["requested_at_us"],
        details=req.get("details", {}),
        decision=row["decision"],
        approver=row["approver"],
        reason=row["reason"],
        envelope=row["envelope"],
    )


class PgApprovals:
    """:class:`~._protocols.ApprovalStore`."""

    def __init__(self, db: PgDb) -> None:
        self._db = db

    async def request(self, member: Member, record: ApprovalRecord) -> None:
        body = {
            "principal": record.principal,
            "action": record.action,
            "target": record.target,
            "rule_id": record.rule_id,
            "step": record.step,
            "args_digest": record.args_digest,
            "details": dict(record.details),
        }
        await self._db.execute(
            "SELECT tenure_request_approval($1, $2, $3, $4, $5, $6)",
            member.id,
            member.generation,
            record.id,
            record.run_id,
            body,
            record.requested_at_us,
        )

    async def decide(
        self,
        request_id: str,
        decision: Decision,
        *,
        approver: str,
        reason: str = "",
        envelope: Mapping[str, Any] | None = None,
    ) -> ApprovalRecord | None:
        async with self._db.connection() as conn, conn.transaction():
            # The counter first (as every log append does), then the compare-and-set.
            await conn.execute("SELECT 1 FROM tenure_gov_counter WHERE id = 1 FOR UPDATE")
            row = await conn.fetchrow(
                "UPDATE tenure_approvals SET decision = $2, approver = $3, reason = $4, "
                "envelope = $5, decided_at = clock_timestamp() "
                f"WHERE id = $1 AND decision IS NULL RETURNING {_APPROVAL_COLUMNS}",
                request_id,
                decision,
                approver,
                reason,
                dict(envelope) if envelope is not None else None,
            )
            if row is None:
                return None
            await conn.execute(
                "SELECT tenure_append('approval.decided', $1)",
                {"request": request_id, "decision": decision},
            )
        return _approval(row)

    async def get(self, request_id: str) -> ApprovalRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_APPROVAL_COLUMNS} FROM tenure_approvals WHERE id = $1", request_id
        )
        return None if row is None else _approval(row)

    async def pending(self) -> list[ApprovalRecord]:
        rows = await self._db.fetch(
            f"SELECT {_APPROVAL_COLUMNS} FROM tenure_approvals WHERE decision IS NULL "
            "ORDER BY requested_at_us, id"
        )
        return [_approval(r) for r in rows]


class PgBudgets:
    """:class:`~._protocols.BudgetStore`."""

    def __init__(self, db: PgDb) -> None:
        self._db = db

    async def debit(self, member: Member, debit: Debit) -> Refusal | None:
        check_plain_debit(debit)
        text: str | None = await self._db.fetchval(
            "SELECT tenure_debit_fenced($1, $2, $3, $4, $5, $6::jsonb, $7)",
            member.id,
            member.generation,
            *debit_args(debit),
        )
        return refusal_of(text)

    async def used(self, run_id: str) -> dict[str, float]:
        used: dict[str, float] | None = await self._db.fetchval(
            "SELECT used FROM tenure_runs WHERE id = $1", run_id
        )
        return {k: float(v) for k, v in (used or {}).items()}


class PgQueue:
    """:class:`~._protocols.DelegationQueue`."""

    def __init__(self, db: PgDb) -> None:
        self._db = db

    async def enqueue(
        self, member: Member, pool: str, run_id: str, payload: Mapping[str, Any]
    ) -> str:
        task_id = "task_" + secrets.token_hex(8)
        await self._db.execute(
            "SELECT tenure_enqueue($1, $2, $3, $4, $5, $6)",
            member.id,
            member.generation,
            task_id,
            pool,
            run_id,
            dict(payload),
        )
        return task_id

    async def claim(self, member: Member, pool: str) -> ClaimedTask | None:
        row = await self._db.fetchrow(
            "SELECT task, task_pool, task_run, task_payload, task_by, by_info, head "
            "FROM tenure_claim($1, $2, $3)",
            member.id,
            member.generation,
            pool,
        )
        if row is None:
            return None
        return ClaimedTask(
            row["task"],
            row["task_pool"],
            row["task_run"],
            row["task_payload"],
            row["task_by"],
            row["by_info"] or {},
            row["head"],
        )

    async def wait_queued(self, pool: str, max_wait: float) -> None:
        async def queued() -> bool:
            found: bool = await self._db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tenure_tasks WHERE pool = $1 AND state = 'queued')",
                pool,
            )
            return found

        await self._db.wait_notified("tenure_queue", pool, max_wait, queued)

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
        found = await self._db.fetchval(
            "SELECT tenure_finish($1, $2, $3, $4, $5, $6)",
            member.id,
            member.generation,
            task_id,
            state,
            result,
            dict(error) if error is not None else None,
        )
        if not found:
            raise fenced(member, f"task {task_id} is not claimed by it in this generation")

    async def outcome(self, task_id: str) -> TaskOutcome:
        row = await self._db.fetchrow(
            "SELECT id, state, claimer, result, error FROM tenure_tasks WHERE id = $1", task_id
        )
        if row is None:
            raise KeyError(f"no delegated task {task_id!r}")
        return TaskOutcome(row["id"], row["state"], row["claimer"], row["result"], row["error"])

    async def wait_outcome(self, task_id: str, max_wait: float) -> TaskOutcome:
        async def ended() -> bool:
            return (await self.outcome(task_id)).state not in ("queued", "claimed")

        deadline = anyio.current_time() + max_wait
        while (left := deadline - anyio.current_time()) > 0:
            await self._db.wait_notified("tenure_task", task_id, left, ended)
            if await ended():
                break
        return await self.outcome(task_id)

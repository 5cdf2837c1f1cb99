"""Evidence segments in PostgreSQL: one writer each, appended at their size, fenced.

A segment's records are exactly the lines a file ledger would hold (the same record bytes,
hash chain and checkpoints, computed by the writer); the database only stores them, so an
export writes them back byte for byte and the offline verifier reads them as any run.

A commit carries the debit of the step whose ``step.start`` it appends (the segment's run is
debited, under that run's row lock) and the release of its segment's ended steps.

A commit that timed out may still have landed (its acknowledgement was lost): the writer
asks :meth:`PgEvidence.size` before going on, and never appends at a guessed position —
a batch at any position but the segment's size is refused (check ``evidence.segment``).
"""

from __future__ import annotations

from ._memory import check_step_debit
from ._pg_db import PgDb
from ._pg_work import debit_args, refusal_of
from ._types import Batch, Debit, Member, Refusal, SegmentInfo

__all__ = ["PgEvidence"]

_COMMIT = (
    "SELECT tenure_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15)"
)


class PgEvidence:
    """:class:`~._protocols.EvidenceSink`."""

    def __init__(self, db: PgDb) -> None:
        self._db = db
        # segment -> its run, for the segments this process opened (the commit names it)
        self._runs: dict[str, str] = {}

    async def open_segment(self, member: Member, segment: SegmentInfo) -> None:
        if segment.member != member.id:
            raise ValueError(
                f"segment {segment.id} names member {segment.member}, not its writer {member.id}"
            )
        await self._db.execute(
            "SELECT tenure_open_segment($1, $2, $3, $4, $5, $6, $7)",
            member.id,
            member.generation,
            segment.id,
            segment.run_id,
            segment.parent,
            segment.parent_index,
            dict(segment.meta),
        )
        self._runs[segment.id] = segment.run_id

    async def commit(
        self, member: Member, batch: Batch, debit: Debit | None = None
    ) -> Refusal | None:
        if debit is None:
            amounts, limits, rates, enter, max_live = None, None, None, 0, None
        else:
            check_step_debit(debit)
            _, amounts, limits, rates, _ = debit_args(debit)
            enter, max_live = debit.enter, debit.max_live
        text: str | None = await self._db.fetchval(
            _COMMIT,
            member.id,
            member.generation,
            batch.segment,
            batch.first,
            list(batch.lines),
            list(batch.instead),
            batch.checkpoint,
            self._runs.get(batch.segment),
            amounts,
            limits,
            rates,
            enter,
            max_live,
            batch.leave,
            batch.close,
        )
        return refusal_of(text)

    async def size(self, segment_id: str) -> int:
        size: int | None = await self._db.fetchval(
            "SELECT size FROM tenure_segments WHERE id = $1", segment_id
        )
        if size is None:
            raise KeyError(f"no evidence segment {segment_id!r}")
        return size

    async def segments(self, run_id: str) -> list[SegmentInfo]:
        rows = await self._db.fetch(
            "SELECT id, run_id, member, parent, parent_index, meta FROM tenure_segments "
            "WHERE run_id = $1 ORDER BY opened_at, id",
            run_id,
        )
        return [
            SegmentInfo(
                r["id"], r["run_id"], r["member"], r["parent"], r["parent_index"], r["meta"]
            )
            for r in rows
        ]

    async def records(self, segment_id: str) -> tuple[list[bytes], str | None]:
        async with self._db.connection() as conn, conn.transaction(isolation="repeatable_read"):
            checkpoint = await conn.fetchval(
                "SELECT checkpoint FROM tenure_segments WHERE id = $1", segment_id
            )
            rows = await conn.fetch(
                "SELECT line FROM tenure_records WHERE segment = $1 ORDER BY i", segment_id
            )
        return [bytes(r["line"]) for r in rows], checkpoint

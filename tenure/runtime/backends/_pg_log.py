"""The governance log, policy sets by digest, and member liveness, in PostgreSQL.

Renewals run on a connection of their own (never the pool): a pool busy with slow writes
must not starve the one call that keeps a worker's authority alive. A renewal that fails
or times out drops that connection (its state is unknown) and the next one reconnects.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import asyncpg

from ._memory import check_kind, lost
from ._pg_db import DRIVER_ERRORS, PgDb
from ._types import GovEvent, LostMember, Member

__all__ = ["PgLiveness", "PgLog"]


class PgLog:
    """:class:`~._protocols.GovernanceLog` and :class:`~._protocols.PolicyStore`."""

    def __init__(self, db: PgDb) -> None:
        self._db = db
        # The LISTEN session in which the head was last found not past a waiter's revision:
        # from then on, every later event reaches this process as a notification.
        self._checked_epoch = -1

    async def append(self, kind: str, data: Mapping[str, Any]) -> int:
        check_kind(kind)
        revision: int = await self._db.fetchval("SELECT tenure_append($1, $2)", kind, dict(data))
        return revision

    async def read(self, after: int, upto: int | None = None) -> list[GovEvent]:
        rows = await self._db.fetch(
            "SELECT revision, kind, data FROM tenure_gov_log "
            "WHERE revision > $1 AND ($2::bigint IS NULL OR revision <= $2) "
            "ORDER BY revision",
            after,
            upto,
        )
        return [GovEvent(r["revision"], r["kind"], r["data"]) for r in rows]

    async def head(self) -> int:
        revision: int = await self._db.fetchval(
            "SELECT revision FROM tenure_gov_counter WHERE id = 1"
        )
        return revision

    async def wait(self, after: int, max_wait: float) -> list[GovEvent]:
        db = self._db

        async def past() -> bool:
            if any(revision > after for revision in db.hints):
                return True
            epoch = db.listen_epoch
            if epoch == self._checked_epoch and db.listening():
                return False  # nothing committed since the check went unnotified
            if await self.head() > after:
                return True
            self._checked_epoch = epoch
            return False

        await db.wait_notified("tenure_gov", "", max_wait, past)
        return self._hinted(after)

    def _hinted(self, after: int) -> list[GovEvent]:
        """The events notifications carried, in order from ``after + 1`` (up to a gap)."""
        hints = self._db.hints
        for revision in [r for r in hints if r <= after]:
            del hints[revision]
        events = []
        revision = after + 1
        while (hint := hints.get(revision)) is not None:
            events.append(GovEvent(revision, hint[0], hint[1]))
            revision += 1
        return events

    async def put_policy(self, digest: str, documents: Sequence[Mapping[str, str]]) -> None:
        await self._db.execute(
            "INSERT INTO tenure_policies (digest, documents) VALUES ($1, $2) "
            "ON CONFLICT (digest) DO NOTHING",
            digest,
            [dict(d) for d in documents],
        )

    async def get_policy(self, digest: str) -> list[dict[str, str]] | None:
        documents: list[dict[str, str]] | None = await self._db.fetchval(
            "SELECT documents FROM tenure_policies WHERE digest = $1", digest
        )
        return documents


_REGISTER = """
INSERT INTO tenure_members AS m (id, name, pool, generation, state, ttl, expires_at, info)
VALUES ($1, $2, $3, 1, 'live', make_interval(secs => $4), clock_timestamp()
        + make_interval(secs => $4), $5)
ON CONFLICT (name) WHERE name <> '' DO UPDATE
    SET generation = m.generation + 1, state = 'live', pool = excluded.pool,
        ttl = excluded.ttl, expires_at = excluded.expires_at, info = excluded.info,
        registered_at = clock_timestamp()
    WHERE m.state <> 'live'
RETURNING id, generation
"""

_RENEW = """
UPDATE tenure_members SET expires_at = clock_timestamp() + ttl
WHERE id = $1 AND generation = $2 AND state = 'live' AND expires_at > clock_timestamp()
RETURNING (SELECT revision FROM tenure_gov_counter WHERE id = 1)
"""


class PgLiveness:
    """:class:`~._protocols.Liveness`: expiry on the server's clock, one generation bump."""

    def __init__(self, db: PgDb) -> None:
        self._db = db
        self._conn: asyncpg.Connection | None = None
        self._lock = anyio.Lock()

    async def register(
        self, name: str, pool: str | None, ttl: float, info: Mapping[str, Any]
    ) -> Member:
        if not ttl > 0:
            raise ValueError(f"liveness ttl must be positive seconds, got {ttl!r}")
        # A lapsed holder of the name is declared lost first (its tasks, its log entry):
        # taking its name over must not hide that it went away.
        await self.reap()
        row = await self._db.fetchrow(
            _REGISTER, "m_" + secrets.token_hex(8), name, pool, float(ttl), dict(info)
        )
        if row is None:
            raise ValueError(
                f"a member named {name!r} is live already: two processes cannot share a "
                "name (give each worker its own --name)"
            )
        return Member(row["id"], row["generation"], name, pool)

    async def _renewal_conn(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is None or conn.is_closed():
            conn = self._conn = await asyncpg.connect(self._db.url)
        return conn

    async def renew(self, member: Member) -> int:
        async with self._lock:
            try:
                with anyio.fail_after(self._db.op_timeout):
                    conn = await self._renewal_conn()
                    revision: int | None = await conn.fetchval(_RENEW, member.id, member.generation)
            except DRIVER_ERRORS as exc:
                self.drop()
                raise self._db.translate(exc) from exc
            except BaseException:
                self.drop()  # cancelled mid-query: the connection's state is unknown
                raise
        if revision is None:
            raise lost(member, "its liveness lease lapsed or it was declared lost")
        return revision

    def drop(self) -> None:
        """Forget the renewal connection (the next renewal opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def reap(self) -> list[LostMember]:
        rows = await self._db.fetch(
            "SELECT member, generation, name, pool, tasks FROM tenure_reap()"
        )
        return [
            LostMember(r["member"], r["generation"], r["name"], r["pool"], tuple(r["tasks"]))
            for r in rows
        ]

    async def leave(self, member: Member) -> None:
        await self._db.execute(
            "WITH gone AS (UPDATE tenure_members SET state = 'left' "
            "WHERE id = $1 AND generation = $2 AND state = 'live' RETURNING id) "
            "DELETE FROM tenure_run_live WHERE member IN (SELECT id FROM gone)",
            member.id,
            member.generation,
        )

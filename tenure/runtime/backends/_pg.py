"""The PostgreSQL backend: every Protocol of :mod:`._protocols` on one shared database.

:func:`upgrade` creates or migrates the schema (``tenure db upgrade``); :meth:`PgBackend.
connect` refuses a database whose schema version this Tenure does not know, with one line
saying what to do. Connection URLs are libpq's (``postgresql://user@host:port/db``).
"""

from __future__ import annotations

from typing import Final

import anyio
import asyncpg

from ..._errors import GovernanceUnavailable
from ._pg_db import DRIVER_ERRORS, PgDb
from ._pg_evidence import PgEvidence
from ._pg_log import PgLiveness, PgLog
from ._pg_schema import MIGRATIONS, SCHEMA_VERSION
from ._pg_work import PgApprovals, PgBudgets, PgQueue
from ._url import is_postgres, redact

__all__ = ["PgBackend", "check_schema", "upgrade"]

# pg_advisory_xact_lock key of schema changes (any constant; "tenure" in ASCII).
_SCHEMA_LOCK: Final = 0x74656E757265

_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS tenure_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def _schema_error(where: str, message: str) -> GovernanceUnavailable:
    return GovernanceUnavailable(f"{where}: {message}", check="backend.schema", source="backend")


async def _version(conn: asyncpg.Connection) -> int | None:
    if await conn.fetchval("SELECT to_regclass('tenure_schema')") is None:
        return None
    version: int | None = await conn.fetchval("SELECT max(version) FROM tenure_schema")
    return version


def _too_new(where: str, version: int) -> GovernanceUnavailable:
    return _schema_error(
        where,
        f"the Tenure schema is at version {version}, newer than this Tenure knows "
        f"(up to {SCHEMA_VERSION}): upgrade Tenure on this host",
    )


async def upgrade(url: str, *, max_wait: float = 30.0) -> list[int]:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`; the versions applied now.

    Idempotent and safe to run from several hosts at once. Refuses (``GovernanceUnavailable``,
    check ``backend.schema``) a database already at a newer version.
    """
    where = redact(url)
    applied: list[int] = []
    try:
        with anyio.fail_after(max_wait):
            conn = await asyncpg.connect(url)
            try:
                for version, sql in MIGRATIONS:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                        await conn.execute(_CREATE_VERSIONS)
                        current = await _version(conn) or 0
                        if current > SCHEMA_VERSION:
                            raise _too_new(where, current)
                        if version <= current:
                            continue
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO tenure_schema (version) VALUES ($1)", version
                        )
                        applied.append(version)
            finally:
                await conn.close()
    except DRIVER_ERRORS as exc:
        raise PgDb(url, op_timeout=max_wait, pool_size=1).translate(exc) from exc
    return applied


async def check_schema(conn: asyncpg.Connection, where: str) -> None:
    """Refuse a database whose schema version is not :data:`SCHEMA_VERSION`."""
    version = await _version(conn)
    if version is None:
        raise _schema_error(
            where, "no Tenure schema here: run `tenure db upgrade --backend URL` first"
        )
    if version > SCHEMA_VERSION:
        raise _too_new(where, version)
    if version < SCHEMA_VERSION:
        raise _schema_error(
            where,
            f"the Tenure schema is at version {version}, older than this Tenure's "
            f"{SCHEMA_VERSION}: run `tenure db upgrade --backend URL`",
        )


class PgBackend:
    """See the module docstring. Implements :class:`~._protocols.Backend`.

    Args:
        url: the database (``postgresql://...``).
        op_timeout: the longest any one operation may take before it fails as
            ``backend.unreachable`` (a frozen server never hangs a caller longer).
        pool_size: connections for writes (renewals and notifications have their own).
    """

    def __init__(self, url: str, *, op_timeout: float = 5.0, pool_size: int = 10) -> None:
        if not is_postgres(url):
            raise ValueError(
                f"a PostgreSQL backend URL starts with postgresql://, got {redact(url)!r}"
            )
        self.url = url
        self.db = PgDb(url, op_timeout=op_timeout, pool_size=pool_size)
        self.log = self.policies = PgLog(self.db)
        self.liveness = PgLiveness(self.db)
        self.approvals = PgApprovals(self.db)
        self.budgets = PgBudgets(self.db)
        self.queue = PgQueue(self.db)
        self.evidence = PgEvidence(self.db)

    @classmethod
    async def connect(cls, url: str, *, op_timeout: float = 5.0, pool_size: int = 10) -> PgBackend:
        """Open the backend after checking its schema version (fail closed)."""
        backend = cls(url, op_timeout=op_timeout, pool_size=pool_size)
        await backend.db.open()
        try:
            async with backend.db.connection() as conn:
                await check_schema(conn, backend.db.where)
        except BaseException:
            await backend.close()
            raise
        return backend

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        self.liveness.drop()
        await self.db.close()

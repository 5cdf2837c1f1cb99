"""Shared governance state behind small Protocols: in-process by default, or PostgreSQL.

``Runtime()`` keeps everything in its own process (:class:`MemoryBackend`); a backend URL
(``Runtime(backend="postgresql://...")`` or ``TENURE_BACKEND``) shares the governance log,
liveness, approvals, budgets, the delegation queue and evidence segments with every
process pointed at the same database (:class:`PgBackend`). The PostgreSQL driver
(asyncpg) is imported only when such a URL is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._control import ControlPlane
from ._memory import MemoryBackend
from ._protocols import (
    ApprovalStore,
    Backend,
    BudgetStore,
    DelegationQueue,
    EvidenceSink,
    GovernanceLog,
    Liveness,
    PolicyStore,
)
from ._types import (
    EVENT_KINDS,
    ApprovalRecord,
    Batch,
    ClaimedTask,
    Debit,
    GovEvent,
    LostMember,
    Member,
    RateWindow,
    Refusal,
    SegmentInfo,
    TaskOutcome,
)
from ._url import is_postgres, redact

if TYPE_CHECKING:
    from ._pg import PgBackend

__all__ = [
    "EVENT_KINDS",
    "ApprovalRecord",
    "ApprovalStore",
    "Backend",
    "Batch",
    "BudgetStore",
    "ClaimedTask",
    "ControlPlane",
    "Debit",
    "DelegationQueue",
    "EvidenceSink",
    "GovEvent",
    "GovernanceLog",
    "Liveness",
    "LostMember",
    "Member",
    "MemoryBackend",
    "PolicyStore",
    "RateWindow",
    "Refusal",
    "SegmentInfo",
    "TaskOutcome",
    "is_postgres",
    "open_backend",
    "redact",
    "upgrade_schema",
]


async def open_backend(url: str | None, *, op_timeout: float = 5.0) -> Backend:
    """The backend a URL names: ``None``/``"memory:"`` in-process, ``postgresql://`` shared.

    A PostgreSQL database is checked first: one whose schema this Tenure does not know is
    refused (``GovernanceUnavailable``, check ``backend.schema``).
    """
    if url is None or url == "memory:":
        return MemoryBackend()
    if is_postgres(url):
        pg: PgBackend = await _pg_module().PgBackend.connect(url, op_timeout=op_timeout)
        return pg
    raise ValueError(
        f"unknown backend {url.split('://', 1)[0]!r}: expected a postgresql:// URL or 'memory:'"
    )


async def upgrade_schema(url: str) -> list[int]:
    """Create or migrate a backend's schema (``tenure db upgrade``); versions applied now."""
    if not is_postgres(url):
        raise ValueError("only a postgresql:// backend has a schema to upgrade")
    applied: list[int] = await _pg_module().upgrade(url)
    return applied


def _pg_module() -> Any:
    try:
        from . import _pg
    except ImportError as exc:  # asyncpg is an optional dependency
        raise RuntimeError(
            f"a postgresql:// backend needs the asyncpg driver ({exc}): "
            "pip install 'tenure[postgresql]'"
        ) from exc
    return _pg

"""Connections to PostgreSQL: a pool for writes, one connection for LISTEN, the boundary.

Why asyncpg: with the server frozen, a psycopg query cancelled after 0.5 s returns after
about 10 s (it absorbs the cancellation); asyncpg returns at the deadline. Every operation
here is bounded by ``op_timeout``, so a hung server costs a caller at most that.

Invariants:

- No driver exception crosses this module: connection trouble and timeouts raise
  ``GovernanceUnavailable`` (check ``backend.unreachable``); a refused fence raises it with
  check ``backend.fenced``; a batch at the wrong segment position with check
  ``evidence.segment``; any other server error with check ``backend.error``.
- Notifications only wake waiters: a waiter always re-reads the state it waits for, so a
  lost notification (listener connection dropped, frozen or never told) delays it by at
  most its polling interval, never loses what it waits for. A governance event that rides
  in its notification (schema 3) is kept in :attr:`PgDb.hints` by revision, so the log's
  reader can apply it without reading it back; it still reads the log for any revision it
  has no hint of.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import anyio
import asyncpg

from ..._errors import GovernanceUnavailable
from ._url import redact

__all__ = ["CHANNELS", "DRIVER_ERRORS", "PgDb"]

#: NOTIFY channels: governance log revisions (payload: the event), queued tasks (payload:
#: the pool), finished tasks (payload: the task id).
CHANNELS: Final = ("tenure_gov", "tenure_queue", "tenure_task")
_MAX_HINTS: Final = 4096

_FENCED: Final = "TN001"
#: What the driver raises when the server or the connection fails (translated here).
DRIVER_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
_SEGMENT: Final = "TN002"


def _broken(exc: BaseException) -> bool:
    """Whether ``exc`` leaves its connection in an unknown state (anything but an answer
    the server gave, or an error of ours)."""
    if isinstance(exc, GovernanceUnavailable):
        return False
    if isinstance(exc, asyncpg.PostgresError):
        return isinstance(exc, asyncpg.PostgresConnectionError)
    return True


async def _setup(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_reset(conn: asyncpg.Connection) -> None:
    # Pool connections never LISTEN nor change session state, so the default reset (one
    # more round trip per operation) has nothing to undo.
    return None


class PgDb:
    """The connection pool, the listener, and the translation of driver errors."""

    def __init__(self, url: str, *, op_timeout: float, pool_size: int) -> None:
        self.url = url
        self.where = redact(url)
        self.op_timeout = op_timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_lock = anyio.Lock()
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}
        self._closed = False
        #: governance events seen in notifications: revision -> (kind, data), or ``None``
        #: for a notification that named the revision only
        self.hints: dict[int, tuple[str, Any] | None] = {}
        #: bumped each time the LISTEN connection is opened or lost (what a notification
        #: cannot have told a waiter must then be read)
        self.listen_epoch = 0

    def unreachable(self, exc: BaseException | str) -> GovernanceUnavailable:
        """The error for a backend that did not answer (or answered with a fault)."""
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        return GovernanceUnavailable(
            f"the governance backend {self.where} is unreachable: {detail}",
            check="backend.unreachable",
            source="backend",
        )

    def translate(self, exc: BaseException) -> GovernanceUnavailable:
        """A driver exception as the governance error it means."""
        if isinstance(exc, GovernanceUnavailable):
            return exc
        if isinstance(exc, asyncpg.PostgresError):
            code = getattr(exc, "sqlstate", "")
            message = getattr(exc, "message", str(exc))
            if code == _FENCED:
                return GovernanceUnavailable(
                    f"write refused by the governance backend: {message}",
                    check="backend.fenced",
                    source="backend",
                )
            if code == _SEGMENT:
                return GovernanceUnavailable(message, check="evidence.segment", source="backend")
            if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
                return GovernanceUnavailable(
                    f"{self.where} has no Tenure schema ({message}): "
                    f"run `tenure db upgrade --backend URL`",
                    check="backend.schema",
                    source="backend",
                )
            if not isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.AdminShutdownError):
                return GovernanceUnavailable(
                    f"the governance backend {self.where} refused an operation: "
                    f"{type(exc).__name__}: {message}",
                    check="backend.error",
                    source="backend",
                )
        return self.unreachable(exc)

    async def open(self) -> None:
        """Create the pool (one connection at once, more on demand)."""
        try:
            with anyio.fail_after(self.op_timeout):
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=1,
                    max_size=self._pool_size,
                    init=_setup,
                    reset=_no_reset,
                    command_timeout=self.op_timeout,
                    max_inactive_connection_lifetime=60.0,
                )
        except DRIVER_ERRORS as exc:
            raise self.translate(exc) from exc

    async def close(self) -> None:
        """Close every connection (a hung server is not waited for)."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.move_on_after(self.op_timeout) as scope:
                await pool.close()
            if scope.cancelled_caught:
                pool.terminate()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one operation; driver errors come out translated."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("the PostgreSQL backend is closed")
        try:
            with anyio.fail_after(self.op_timeout):
                async with pool.acquire() as conn:
                    try:
                        yield conn
                    except BaseException as exc:
                        if _broken(exc):
                            # Its state is unknown (cut mid-operation): never reuse it, and
                            # if the server went away the others are dead too (a restart).
                            with contextlib.suppress(asyncpg.InterfaceError):
                                conn.terminate()  # (the pool may have dropped it already)
                            await pool.expire_connections()
                        raise
        except DRIVER_ERRORS as exc:
            raise self.translate(exc) from exc

    async def fetchval(self, query: str, *args: Any) -> Any:
        """One value of one query."""
        async with self.connection() as conn:
            return await conn.fetchval(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Every row of one query."""
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """The first row of one query, or ``None``."""
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(query, *args)
            return row

    async def execute(self, query: str, *args: Any) -> None:
        """Run one statement."""
        async with self.connection() as conn:
            await conn.execute(query, *args)

    # -- notifications --------------------------------------------------------------------

    def listener_pid(self) -> int | None:
        """The server process of the LISTEN connection (tests break it on purpose)."""
        listener = self._listener
        return None if listener is None or listener.is_closed() else listener.get_server_pid()

    def _event(self, channel: str, key: str) -> asyncio.Event:
        event = self._waiters.get((channel, key))
        if event is None:
            event = self._waiters[(channel, key)] = asyncio.Event()
        return event

    def listening(self) -> bool:
        """Whether the LISTEN connection is open now."""
        return self._listener is not None and not self._listener.is_closed()

    def _notified(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        if channel == "tenure_gov":
            self._hint(payload)
        for key in ("", payload):
            event = self._waiters.pop((channel, key), None)
            if event is not None:
                event.set()

    def _hint(self, payload: str) -> None:
        try:
            hint = json.loads(payload)
        except ValueError:
            return
        if not isinstance(hint, dict) or type(hint.get("r")) is not int:
            return
        kind, data = hint.get("k"), hint.get("d")
        hints = self.hints
        if len(hints) >= _MAX_HINTS:  # nobody reads them: keep the newest half
            for revision in sorted(hints)[: _MAX_HINTS // 2]:
                del hints[revision]
        hints[hint["r"]] = (
            (kind, data) if isinstance(kind, str) and isinstance(data, dict) else None
        )

    def _dropped(self, _conn: object) -> None:
        self._listener = None
        self.listen_epoch += 1
        # Waiters must not sleep on a channel that can no longer wake them.
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    async def listen(self) -> None:
        """Open the LISTEN connection if it is not open (failures leave waiters polling)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listen_lock:
            if self._closed or (self._listener is not None and not self._listener.is_closed()):
                return
            conn: asyncpg.Connection | None = None
            try:
                with anyio.fail_after(self.op_timeout):
                    conn = await asyncpg.connect(self.url)
                    conn.add_termination_listener(self._dropped)
                    for channel in CHANNELS:
                        await conn.add_listener(channel, self._notified)
            except DRIVER_ERRORS:
                if conn is not None:
                    conn.terminate()
                return  # waiters fall back to polling; the next wait tries again
            except BaseException:  # cancelled half-way: never leave a connection behind
                if conn is not None:
                    conn.terminate()
                raise
            self._listener = conn
            self.listen_epoch += 1

    async def wait_notified(
        self, channel: str, key: str, max_wait: float, ready: Callable[[], Any] | None = None
    ) -> None:
        """Sleep until ``channel`` carries ``key`` ("": anything) or ``max_wait`` passes.

        ``ready`` is awaited after the waiter is armed; when it says the condition holds
        already, the wait ends at once (no notification can fall between check and sleep).
        """
        with anyio.move_on_after(max_wait):
            await self.listen()
            event = self._event(channel, key)
            if ready is not None and await ready():
                return
            await event.wait()

"""The renewal rule: events first, then the deadline; authority ends on the local clock."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from time import monotonic

import anyio
import pytest

from tenure.runtime.backends import Backend, ControlPlane, GovEvent
from tenure.runtime.backends._pg import PgBackend, upgrade

from ._pg import PgServer

TTL, MARGIN, INTERVAL = 1.5, 0.3, 0.25


class Applied:
    """What a control plane applied, in order, and events to wait on."""

    def __init__(self) -> None:
        self.events: list[GovEvent] = []
        self.expired = anyio.Event()
        self.changed = anyio.Event()

    async def apply(self, event: GovEvent) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = anyio.Event()

    def expire(self) -> None:
        self.expired.set()

    async def until(self, ok: Callable[[], bool], within: float = 10) -> None:
        with anyio.fail_after(within):
            while not ok():
                await self.changed.wait()


@asynccontextmanager
async def running(
    backend: Backend, applied: Applied, apply: Callable[[GovEvent], Awaitable[None]] | None = None
) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(
        backend,
        name="w1",
        pool="pool-a",
        on_event=apply or applied.apply,
        on_expired=applied.expire,
        ttl=TTL,
        margin=MARGIN,
        interval=INTERVAL,
        reap_interval=0.1,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(cp.run)
        try:
            yield cp
        finally:
            tg.cancel_scope.cancel()


def _revoke(i: int) -> dict[str, str]:
    return {"target": f"run_{i}", "reason": "stop", "by": "test"}


async def test_events_are_applied_in_revision_order_exactly_once(backend: Backend) -> None:
    await backend.log.append("revoke", _revoke(0))  # before the member joined: applied too
    applied = Applied()
    async with running(backend, applied) as cp:
        for i in range(1, 40):
            await backend.log.append("revoke", _revoke(i))
            if i % 10 == 0:
                assert await cp.renew_once()
        await applied.until(lambda: len(applied.events) >= 40)
        assert await cp.renew_once()
    assert [e.revision for e in applied.events] == list(range(1, 41))
    assert [e.data["target"] for e in applied.events] == [f"run_{i}" for i in range(40)]
    assert not applied.expired.is_set()


async def test_the_deadline_waits_for_every_event_up_to_the_renewal_revision(
    backend: Backend,
) -> None:
    """An event that cannot be applied keeps the deadline where it was: authority lapses."""
    applied = Applied()
    release = anyio.Event()

    async def stuck(event: GovEvent) -> None:
        if event.data["target"] == "run_stuck":
            await release.wait()
        await applied.apply(event)

    async with running(backend, applied, stuck) as cp:
        before = cp.deadline
        await backend.log.append("revoke", {"target": "run_stuck", "reason": "r", "by": "t"})
        with anyio.fail_after(TTL * 4):
            await applied.expired.wait()
        assert not cp.live()
        assert cp.deadline <= before + INTERVAL * 2  # never extended past the stuck event
        release.set()
        await applied.until(lambda: len(applied.events) == 1)


@pytest.fixture
async def private_backend(pg_private: PgServer) -> AsyncIterator[PgBackend]:
    await upgrade(pg_private.dsn)
    backend = await PgBackend.connect(pg_private.dsn, op_timeout=1.0)
    try:
        yield backend
    finally:
        await backend.close()


async def test_a_frozen_server_ends_the_members_authority_on_its_own_clock(
    pg_private: PgServer, private_backend: PgBackend
) -> None:
    """SIGSTOP of every server process: no reply, no error; the deadline alone stops work,
    no later than ttl - margin after the freeze. After the thaw it rejoins under a new
    generation (its old one was fenced)."""
    applied = Applied()
    async with running(private_backend, applied) as cp:
        assert await cp.renew_once()
        old = cp.member
        assert old is not None
        frozen = pg_private.freeze()
        t_freeze = monotonic()
        try:
            with anyio.fail_after(TTL * 4):
                await applied.expired.wait()
            assert monotonic() - t_freeze <= TTL  # stopped well before the server could reap
            assert cp.deadline <= t_freeze + TTL - MARGIN
            assert not cp.live()
            await anyio.sleep(TTL - (monotonic() - t_freeze) + 0.2)  # past the server's ttl
        finally:
            pg_private.thaw(frozen)
        with anyio.fail_after(20):
            while True:  # polled: rejoining is the control plane's own timer, not an event
                if cp.member is not None and cp.member.generation != old.generation:
                    break
                await anyio.sleep(INTERVAL)
        assert cp.live()
        assert cp.member.id == old.id and cp.member.generation > old.generation
    lost = [e for e in await private_backend.log.read(0) if e.kind == "worker.lost"]
    assert [(e.data["member"], e.data["generation"]) for e in lost] == [(old.id, old.generation)]


async def test_a_revocation_reaches_a_member_whose_notifications_are_frozen_by_renewal(
    pg_private: PgServer, private_backend: PgBackend
) -> None:
    """The LISTEN connection's server process is stopped: NOTIFY never arrives, and the
    next renewal's revision still brings the revocation (within one renewal interval)."""
    applied = Applied()
    other = await PgBackend.connect(pg_private.dsn)
    try:
        async with running(private_backend, applied) as cp:
            await private_backend.db.listen()
            pid = private_backend.db.listener_pid()
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                renewals = cp.renewals
                await other.log.append("revoke", _revoke(1))
                await applied.until(lambda: len(applied.events) == 1)
                # The first renewal sent after the append carries it (one in flight may not).
                assert cp.renewals <= renewals + 2
            finally:
                os.kill(pid, signal.SIGCONT)
    finally:
        await other.close()
    assert [e.data["target"] for e in applied.events] == ["run_1"]


async def test_events_committed_around_a_server_crash_are_applied_once_in_order(
    pg_private: PgServer, private_backend: PgBackend
) -> None:
    """Failure table: the database killed (SIGKILL of every process) and restarted. Every
    committed event is applied exactly once, in revision order, across the reconnect."""
    applied = Applied()
    async with running(private_backend, applied) as cp:
        writer = await PgBackend.connect(pg_private.dsn)
        try:
            for i in range(30):
                await writer.log.append("revoke", _revoke(i))
        finally:
            await writer.close()
        pg_private.kill()
        pg_private.start()
        writer = await PgBackend.connect(pg_private.dsn)
        try:
            for i in range(30, 60):
                await writer.log.append("revoke", _revoke(i))
        finally:
            await writer.close()
        await applied.until(lambda: len(applied.events) >= 60, within=20)
        assert await cp.renew_once()
    assert [e.revision for e in applied.events] == list(range(1, 61))
    assert [e.data["target"] for e in applied.events] == [f"run_{i}" for i in range(60)]


def _count_is(applied: Applied, n: int) -> bool:
    return len(applied.events) == n


@asynccontextmanager
async def quiet(backend: Backend, applied: Applied) -> AsyncIterator[ControlPlane]:
    """A control plane that renews far less often than the test lasts: what it applies
    reaches it through notifications (or the reads they make it do)."""
    cp = ControlPlane(
        backend, name="quiet", pool=None, on_event=applied.apply, ttl=60, margin=1, interval=20
    )
    async with anyio.create_task_group() as tg:
        await tg.start(cp.run)
        try:
            yield cp
        finally:
            tg.cancel_scope.cancel()


async def test_an_event_carried_by_its_notification_is_applied_without_reading_the_log(
    pg_backend: PgBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = Applied()
    reads: list[int] = []
    read = pg_backend.log.read

    async def counted(after: int, upto: int | None = None) -> list[GovEvent]:
        reads.append(after)
        return await read(after, upto)

    other = await PgBackend.connect(pg_backend.url)
    try:
        async with quiet(pg_backend, applied):
            await pg_backend.db.listen()
            monkeypatch.setattr(pg_backend.log, "read", counted)
            for i in range(1, 21):
                await other.log.append("revoke", _revoke(i - 1))
                await applied.until(partial(_count_is, applied, i))
    finally:
        await other.close()
    assert [e.data["target"] for e in applied.events] == [f"run_{i}" for i in range(20)]
    assert [e.revision for e in applied.events] == list(range(1, 21))
    assert reads == []  # each came with its notification


async def test_a_revision_whose_notification_was_lost_is_read_from_the_log_in_order(
    pg_backend: PgBackend,
) -> None:
    """NOTIFY stays a hint: an event committed without one (as if its notification were
    lost) is read from the log when the next notification shows the gap, and every event
    is applied once, in revision order."""
    applied = Applied()
    other = await PgBackend.connect(pg_backend.url)
    try:
        async with quiet(pg_backend, applied):
            await pg_backend.db.listen()
            await other.log.append("revoke", _revoke(0))
            await applied.until(lambda: len(applied.events) == 1)
            async with other.db.connection() as conn, conn.transaction():
                revision = await conn.fetchval(
                    "UPDATE tenure_gov_counter SET revision = revision + 1 WHERE id = 1 "
                    "RETURNING revision"
                )
                await conn.execute(
                    "INSERT INTO tenure_gov_log (revision, kind, data) VALUES ($1, 'revoke', $2)",
                    revision,
                    _revoke(1),
                )
            await other.log.append("revoke", _revoke(2))
            await applied.until(lambda: len(applied.events) == 3)
    finally:
        await other.close()
    assert [e.revision for e in applied.events] == [1, 2, 3]
    assert [e.data["target"] for e in applied.events] == ["run_0", "run_1", "run_2"]

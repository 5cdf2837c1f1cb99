"""Failure table: clock skew (libfaketime). No decision compares two hosts' clocks — expiry
is the server's, each process's authority its own monotonic clock's — so workers an hour
ahead, an hour behind or running 2 % fast serve a run like any other; and a clock whose
*rate* is wrong beyond margin/ttl only yields refused writes and a stopped worker.

Each worker runs with libfaketime preloaded (the Debian package ``faketime``; ``make
test`` installs it as root), which fakes both its wall clock and its monotonic clock. It is
preloaded into the worker process itself (not through the ``faketime`` wrapper, which
would stand between the test and the worker's signals).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tenure import GovernanceUnavailable, Runtime
from tenure.runtime.backends._pg import PgBackend, upgrade

from ._pg import PgServer
from .conftest import WorkerProcess, export_and_verify, marked
from .pool_agents import crowd, delegates_ticker

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'
# The thread-safe variant: a worker has threads (the stall detector, anyio's workers).
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))), None)

pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None,
    reason="libfaketime is not installed: the Debian package 'faketime' (make test installs "
    "it when run as root)",
)


def faked(spec: str) -> dict[str, str]:
    """The environment of a worker whose clocks libfaketime sets by ``spec``."""
    assert LIBFAKETIME is not None
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": spec}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "allow.toml"
    path.write_text(ALLOW)
    return path


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_workers_an_hour_ahead_an_hour_behind_and_2_percent_fast_serve_one_run(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """One part of one run on each skewed worker: every part runs and returns, no worker
    is ever declared lost (the server's expiry does not care how any worker's clock is
    set or how fast it runs), and the exported run verifies with each part's records on
    its own worker's clock, an hour apart."""
    await upgrade(pg_url)
    skews = {"ahead": "+1h", "behind": "-1h", "fast": "+0 x1.02"}
    pool = {name: workers(pg_url, name, concurrency=1, env=faked(s)) for name, s in skews.items()}
    markers = [tmp_path / f"held-{i}" for i in range(3)]
    release = tmp_path / "release"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(
            crowd, [str(m) for m in markers], str(release), principal="alice", ttl=120
        )
        await marked(*markers)
        release.write_text("go\n")
        with anyio.fail_after(60):
            assert await handle.result() == ["released"] * 3
        lost = [e for e in await backend.log.read(0) if e.kind == "worker.lost"]
        members = dict(await backend.db.fetch("SELECT id, name FROM tenure_members"))
        segments = await backend.evidence.segments(handle.run_id)
    assert lost == []
    assert {members[s.member] for s in segments[1:]} == set(skews)
    root_t = int(str(_records(handle.evidence_path / "ledger.jsonl")[0]["t"]))
    for name, worker in pool.items():
        part = next(worker.evidence.glob(f"{handle.run_id}.*"))
        offset = (int(str(_records(part / "ledger.jsonl")[0]["t"])) - root_t) / 1e6
        expected = {"ahead": 3600, "behind": -3600, "fast": 0}[name]
        assert abs(offset - expected) < 120, (name, offset)  # the skew was real
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: verified (4 segments)" in verify.stdout


async def test_a_clock_slow_beyond_the_margin_only_gets_its_writes_refused_and_stops(
    pg_private: PgServer, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """A worker whose clock runs at half speed: its 2.5 s of local authority last 5 s, past
    the server's 3 s lease. The database freezes for 4 s mid-step (no renewal is answered).
    When it thaws the server's lease has ended while the worker still believes it holds
    authority — and every write it sent is refused: its segment holds nothing it wrote
    after the freeze began, its part is stopped, the task is lost (never re-run), and the
    worker rejoins under a new generation."""
    await upgrade(pg_private.dsn)
    worker = workers(pg_private.dsn, "slow", concurrency=1, env=faked("+0 x0.5"))
    marker = tmp_path / "running"
    async with Runtime(
        backend=pg_private.dsn, evidence_dir=tmp_path / "runs", policies=policy
    ) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(
            delegates_ticker, str(marker), principal="alice", scopes={"notes:read"}, ttl=120
        )
        await marked(marker)
        before = await backend.db.fetchrow(
            "SELECT id, generation FROM tenure_members WHERE name = 'slow'"
        )
        assert before is not None
        frozen = pg_private.freeze()
        try:
            await anyio.sleep(4.0)  # the fault itself: a 4 s freeze (ttl 3 s < 4 s < 5 s)
        finally:
            pg_private.thaw(frozen)
        with anyio.fail_after(30), pytest.raises(GovernanceUnavailable):
            await handle.result()
        child = (await backend.evidence.segments(handle.run_id))[1].id
        with anyio.fail_after(30):
            while True:  # it rejoins on its own timer, under a new generation
                row = await backend.db.fetchrow(
                    "SELECT generation, state FROM tenure_members WHERE name = 'slow'"
                )
                if row is not None and row["state"] == "live":
                    break
                await anyio.sleep(0.1)
        durable, _ = await backend.evidence.records(child)
        lost = [e for e in await backend.log.read(0) if e.kind == "worker.lost"]
        task = await backend.db.fetchval("SELECT state FROM tenure_tasks")
    assert row["generation"] > before["generation"]
    assert (before["id"], before["generation"]) in {
        (e.data["member"], e.data["generation"]) for e in lost
    }
    assert task == "lost"
    local_path = worker.evidence / child / "ledger.jsonl"
    with anyio.fail_after(30):
        while True:  # the worker records its own stop locally (its clock is slow)
            local = _records(local_path)
            if local and local[-1]["kind"] == "checkpoint" and len(local) > len(durable):
                break
            await anyio.sleep(0.1)
    shipped = [json.loads(line) for line in durable]
    assert shipped == local[: len(shipped)]  # a prefix: nothing it wrote later landed
    assert not any(r["kind"] in ("violation", "run.end") for r in shipped)
    stop = next(r for r in local if r["kind"] == "violation")
    assert stop["check"] in {"evidence.segment", "backend.liveness", "backend.fenced"}
    assert worker.proc.poll() is None  # stopped its work, not itself
    # The delegating process lost its own authority in the freeze too: both segments hold
    # what was durable, and the export verifies as cut short (never as tampered).
    verify = await export_and_verify(pg_private.dsn, handle.run_id, tmp_path / "export")
    assert verify.returncode == 3, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: incomplete (2 segments)" in verify.stdout

"""Failure table: a worker partitioned from the database (a network namespace, link down)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from tenure import GovernanceUnavailable, Runtime
from tenure.runtime.backends._pg import PgBackend, upgrade

from ._netns import NetNs, available
from ._pg import PgServer
from .conftest import ROOT, WorkerProcess
from .pool_agents import delegates_lingerer

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'
TTL, MARGIN = 3.0, 0.5  # the worker's defaults (RuntimeConfig liveness_ttl / _margin)


@pytest.fixture
def netns(pg_private: PgServer) -> Iterator[NetNs]:
    """A namespace for one worker, and the test's server reachable from it."""
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces unavailable: {why}")
    ns = NetNs.create(100 + os.getpid() % 100)
    try:
        pg_private.stop()
        pg_private.trust(f"{ns.ns_ip}/32")
        pg_private.start(listen=("127.0.0.1", ns.host_ip))
        yield ns
    finally:
        ns.destroy()


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_partitioned_worker_stops_before_it_is_reaped_and_keeps_its_durable_prefix(
    pg_private: PgServer,
    netns: NetNs,
    tmp_path: Path,
    workers: Callable[..., WorkerProcess],
) -> None:
    """The link to a worker goes silently down mid-step. The worker stops its part on its
    own clock before the server reaps it; what the database holds of its segment is exactly
    the prefix it shipped; the parent records the loss (outcome unknown) and nothing runs
    twice; the exported run verifies, with the loss reported."""
    await upgrade(pg_private.dsn)
    far = pg_private.dsn.replace("127.0.0.1", netns.host_ip)
    worker = workers(far, "w-far", wrap=netns.argv)
    policy = tmp_path / "allow.toml"
    policy.write_text(ALLOW)
    marker = tmp_path / "running"
    async with Runtime(
        backend=pg_private.dsn, evidence_dir=tmp_path / "runs", policies=policy
    ) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(delegates_lingerer, str(marker), principal="alice", ttl=60)
        with anyio.fail_after(30):
            while True:  # the marker is the worker's file: polled
                if await anyio.Path(marker).exists():
                    break
                await anyio.sleep(0.02)
        netns.cut()
        cut_us = time.time_ns() // 1000
        with anyio.fail_after(30), pytest.raises(GovernanceUnavailable) as caught:
            await handle.result()
        assert caught.value.check == "worker.lost"
        lost = [e for e in await backend.log.read(0) if e.kind == "worker.lost"]
        reaped_at = await backend.db.fetchval(
            "SELECT (extract(epoch FROM at) * 1e6)::bigint FROM tenure_gov_log "
            "WHERE kind = 'worker.lost'"
        )
        child = (await backend.evidence.segments(handle.run_id))[1].id
        durable, _ = await backend.evidence.records(child)
        tasks = await backend.db.fetch("SELECT state, claimed_at FROM tenure_tasks")
    assert len(lost) == 1
    local_path = worker.evidence / child / "ledger.jsonl"
    with anyio.fail_after(10):
        while True:  # the partitioned worker records its own stop locally
            if any(r["kind"] == "run.end" for r in _records(local_path)):
                break
            await anyio.sleep(0.1)
    local = local_path.read_bytes().splitlines(keepends=True)
    stop = next(
        r
        for r in _records(local_path)
        if r["kind"] == "violation" and r["check"] == "backend.liveness"
    )
    stopped_after = (int(str(stop["t"])) - cut_us) / 1e6
    assert int(str(stop["t"])) < reaped_at, (
        f"stopped {stopped_after:.3f}s after the cut, after the reap"
    )
    assert stopped_after <= TTL  # on its own clock: ttl - margin after its last renewal
    assert local[: len(durable)] == durable and len(local) > len(durable)
    assert [t["state"] for t in tasks] == ["lost"]
    out = tmp_path / "export"
    export = await anyio.to_thread.run_sync(
        _cli, "export", handle.run_id, "--backend", pg_private.dsn, "--out", str(out)
    )
    assert export.returncode == 0, export.stderr
    verify = await anyio.to_thread.run_sync(_cli, "verify", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "its worker was lost (outcome unknown)" in " ".join(verify.stderr.split())


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenure", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )

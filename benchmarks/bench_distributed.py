"""Tenure across processes on PostgreSQL (issue 14): stop latency, per-call cost, throughput.

Run: ``python -m benchmarks --only distributed`` (part of ``make bench``). It starts its own
PostgreSQL (the test suite's harness, ``tests/distributed/_pg.py``) and real ``tenure
worker`` processes serving ``tests/distributed/pool_agents.py``; every runtime and worker
runs at the default safety settings (liveness ttl 3 s, margin 0.5 s, renewals every 0.5 s).

1. ``rt.revoke`` of a run whose three parts run on three worker processes → every part
   stopped (the latest of the three ``lease.revoked`` records), p50/p99 (target p50 ≤ 5 ms);
2. one governed tool call in a runtime with the PostgreSQL backend against the embedded
   default and a bare ``await`` of the same coroutine, p50 per call (target ≤ 1 ms): with a
   backend each call commits its records, its ``step.start`` and its debit of the run's
   shared budget in one transaction before the body (one round trip); measured without
   limits and with shared ``max_tool_calls`` and ``max_concurrency`` (then the start is
   forked: the backend may refuse it);
3. delegations per second to a pool of 1, 2 and 4 workers (4 parts at once each);
4. partition → the worker's stop (network namespace, link down): must be ≤ ttl − margin
   after its last renewal, every time; skipped with the reason without namespaces.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from benchmarks._report import Report, Target
from tenure import GovernanceViolation, Runtime
from tenure.runtime.backends._pg import PgBackend, upgrade
from tests.distributed import pool_agents
from tests.distributed._netns import NetNs, available
from tests.distributed._pg import PgServer
from tests.distributed.conftest import WorkerProcess, start_worker

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'
GROUP = "distributed"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _marked(paths: list[Path]) -> None:
    with anyio.fail_after(30):
        while True:  # other processes' files: polled
            if all(p.exists() for p in paths):
                return
            await anyio.sleep(0.002)


async def _database(server: PgServer, name: str) -> str:
    admin = await asyncpg.connect(server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = server.url(name)
    await upgrade(url)
    return url


async def bench_revoke(server: PgServer, root: Path, report: Report, rounds: int) -> None:
    url = await _database(server, "bench_revoke")
    workers = [start_worker(url, root / f"rw{i}", f"rw{i}", concurrency=1) for i in range(3)]
    delays: list[float] = []
    try:
        async with Runtime(
            backend=url, evidence_dir=root / "revoke", policies=root / "allow.toml"
        ) as rt:
            backend = rt._link.backend  # type: ignore[union-attr]
            for n in range(rounds):
                markers = [root / f"m{n}-{k}" for k in range(3)]
                handle = await rt.start(
                    pool_agents.fan_lingerers, [str(m) for m in markers], principal="bench"
                )
                await _marked(markers)
                t0_us = time.time_ns() // 1000
                rt.revoke(handle.run_id, reason="benchmark")
                with contextlib.suppress(GovernanceViolation):
                    await handle.result()
                stops = []
                for seg in (await backend.evidence.segments(handle.run_id))[1:]:
                    with anyio.fail_after(10):
                        while True:  # the part's stop records reach its segment last
                            lines, _ = await backend.evidence.records(seg.id)
                            revoked = [
                                r for r in map(json.loads, lines) if r["kind"] == "lease.revoked"
                            ]
                            if revoked:
                                break
                            await anyio.sleep(0.01)
                    stops.append(revoked[0]["t"] - t0_us)
                delays.append(max(stops) / 1000)
    finally:
        for w in workers:
            w.stop()
    report.add(
        GROUP,
        "revoke → all parts on 3 workers stopped, p50 (ms)",
        _pct(delays, 0.5),
        "ms",
        target=Target(5),
    )
    report.add(GROUP, "revoke → all parts on 3 workers stopped, p99 (ms)", _pct(delays, 0.99), "ms")
    report.note(f"{GROUP}: revocation over {rounds} runs, 3 worker processes, NOTIFY path")


LIMITS = "\n[budgets]\nmax_tool_calls = 1000000\nmax_concurrency = 64\n"


async def bench_call(server: PgServer, root: Path, report: Report, calls: int) -> None:
    url = await _database(server, "bench_call")
    (root / "limits.toml").write_text(ALLOW + LIMITS)

    async def per_call(policy: str = "allow.toml", **kw: Any) -> list[float]:
        async with Runtime(evidence_dir=root / "call", policies=root / policy, **kw) as rt:
            times: list[int] = await rt.run(
                pool_agents.caller, calls, principal="bench", scopes={"notes:read"}
            )
        return [t / 1000 for t in times[calls // 10 :]]  # after a warm-up tenth

    bare: list[float] = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        await pool_agents.lookup.func("x")
        bare.append((time.perf_counter_ns() - t0) / 1000)
    embedded = await per_call()
    shared = await per_call(backend=url)
    limited = await per_call("limits.toml", backend=url)
    b = statistics.median(bare)
    report.add(
        GROUP,
        "governed tool call, embedded (µs p50)",
        statistics.median(embedded),
        "µs",
        baseline=b,
    )
    report.add(
        GROUP,
        "governed tool call, PostgreSQL backend (µs p50)",
        statistics.median(shared),
        "µs",
        baseline=b,
        target=Target(1000),
    )
    report.add(
        GROUP,
        "governed tool call, PostgreSQL backend (µs p99)",
        _pct(shared, 0.99),
        "µs",
        baseline=b,
    )
    report.add(
        GROUP,
        "governed tool call, PostgreSQL backend, shared max_tool_calls + max_concurrency (µs p50)",
        statistics.median(limited),
        "µs",
        baseline=b,
        target=Target(1000),
    )


async def bench_throughput(server: PgServer, root: Path, report: Report, parts: int) -> None:
    for n in (1, 2, 4):
        url = await _database(server, f"bench_pool_{n}")
        workers = [start_worker(url, root / f"tw{n}-{i}", f"tw{n}-{i}") for i in range(n)]
        try:
            async with Runtime(
                backend=url, evidence_dir=root / f"tp{n}", policies=root / "allow.toml"
            ) as rt:
                topics = [f"t{i}" for i in range(parts)]
                t0 = time.perf_counter()
                await rt.run(pool_agents.planner, topics, principal="bench", scopes={"notes:read"})
                elapsed = time.perf_counter() - t0
        finally:
            for w in workers:
                w.stop()
        report.add(GROUP, f"delegations per second, pool of {n}", parts / elapsed, "/s")


async def bench_partition(root: Path, template: Path, report: Report, rounds: int) -> None:
    why = available()
    if why is not None:
        report.note(f"{GROUP}: partition benchmark skipped: network namespaces unavailable ({why})")
        return
    ns = NetNs.create(200)
    server = PgServer.create(template)
    worker: WorkerProcess | None = None
    try:
        server.trust(f"{ns.ns_ip}/32")
        server.start(listen=("127.0.0.1", ns.host_ip))
        await upgrade(server.dsn)
        far = server.dsn.replace("127.0.0.1", ns.host_ip)
        worker = start_worker(far, root / "far", "far", wrap=ns.argv)
        delays = []
        async with Runtime(
            backend=server.dsn, evidence_dir=root / "part", policies=root / "allow.toml"
        ) as rt:
            backend = rt._link.backend  # type: ignore[union-attr]
            assert isinstance(backend, PgBackend)
            for n in range(rounds):
                marker = root / f"p{n}"
                handle = await rt.start(
                    pool_agents.delegates_lingerer, str(marker), principal="bench"
                )
                await _marked([marker])
                ns.cut()
                cut_us = time.time_ns() // 1000
                with contextlib.suppress(GovernanceViolation):
                    await handle.result()
                child = (await backend.evidence.segments(handle.run_id))[1].id
                local = root / "far" / child / "ledger.jsonl"
                with anyio.fail_after(10):
                    while True:  # the cut-off worker records its stop locally
                        records = [json.loads(x) for x in local.read_text().splitlines()]
                        stop = [r for r in records if r.get("check") == "backend.liveness"]
                        if stop:
                            break
                        await anyio.sleep(0.05)
                delays.append((stop[0]["t"] - cut_us) / 1e6)
                subprocess_up(ns)
                with anyio.fail_after(20):
                    while True:  # it rejoins under a new generation
                        live = await backend.db.fetchval(
                            "SELECT state = 'live' FROM tenure_members WHERE name = 'far'"
                        )
                        if live:
                            break
                        await anyio.sleep(0.1)
    finally:
        if worker is not None:
            worker.stop()
        server.destroy()
        ns.destroy()
    bound = 3.0 - 0.5
    report.add(GROUP, "partition → worker stopped, max (s)", max(delays), "s", target=Target(bound))
    report.add(GROUP, "partition → worker stopped, min (s)", min(delays), "s")
    report.note(f"{GROUP}: partition over {rounds} cuts; bound ttl − margin = {bound:g} s")


def subprocess_up(ns: NetNs) -> None:
    """Heal the partition (the host end of the link up again)."""
    subprocess.run(["ip", "link", "set", ns.host_if, "up"], check=True, timeout=30)


def run(report: Report, *, quick: bool = False) -> None:
    """Every distributed benchmark (see the module docstring)."""
    root = Path(tempfile.mkdtemp(prefix="tenure-bench-dist-"))
    (root / "allow.toml").write_text(ALLOW)
    template = PgServer.create()
    server = PgServer.create(template.data)
    server.start()

    async def everything() -> None:
        await bench_call(server, root, report, 300 if quick else 2000)
        await bench_revoke(server, root, report, 20 if quick else 200)
        await bench_throughput(server, root, report, 40 if quick else 200)
        await bench_partition(root, template.data, report, 2 if quick else 5)

    try:
        anyio.run(everything)
    finally:
        server.destroy()
        shutil.rmtree(template.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

"""Cost of isolation levels and how fast a stop kills a process-isolated tool.

Run: ``python -m benchmarks.bench_isolation`` (or as part of ``python -m benchmarks``).
Governed calls go through ``ctx.call`` under an allow-all policy, a fresh in-memory key and
evidence in a temporary folder (every call decided, recorded and spanned), so the
in-process figure is the governed baseline and the process figure minus it is what the
worker boundary adds. Medians of individually timed calls after a warm-up.

1. one call of a trivial sync tool: ``isolation="none"`` / ``"thread"`` / ``"process"``
   (warm pool), and the raw pool round trip and ``anyio.to_process.run_sync`` (the
   alternative considered) without governance;
2. cold start: the first process-isolated call of a fresh runtime (starts a worker);
3. revoke to kill: a worker spinning in ``while True``; ``rt.revoke`` until the
   ``isolation.killed`` record (worker SIGKILLed and reaped), and until
   ``handle.result()`` raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process

from tenure import Context, LeaseRevoked, Runtime, SigningKey, agent, tool
from tenure.policies import PolicySet

_ALLOW = """
version = 1
default = "deny"
[[rules]]
id = "bench-allow"
effect = "allow"
"""


def _plain(i: int) -> int:
    return i


@tool(name="bench_inline")
def inline(i: int) -> int:
    """Trivial sync tool, run inline."""
    return i


@tool(name="bench_thread", isolation="thread")
def in_thread(i: int) -> int:
    """Trivial sync tool, run in a thread."""
    return i


@tool(name="bench_process", isolation="process")
def in_process(i: int) -> int:
    """Trivial sync tool, run in a worker process."""
    return i


@tool(name="bench_spin", isolation="process")
def spin(marker: str) -> None:
    """Announce the pid, then spin in pure Python until killed."""
    Path(marker + ".tmp").write_text(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    n = 0
    while True:
        n += 1


@agent(name="bench_caller")
async def caller(ctx: Context, target: Any, n: int) -> list[int]:
    """Call ``target`` ``n`` times, timing each call (ns)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        await ctx.call(target, i)
        times.append(time.perf_counter_ns() - t0)
    return times


@agent(name="bench_spinner")
async def spinner(ctx: Context, marker: str) -> None:
    """Call the spinning tool (never returns on its own)."""
    await ctx.call(spin, marker)


def _med_us(ns: list[int]) -> float:
    return round(statistics.median(ns) / 1000, 1)


def _runtime(folder: Path) -> Runtime:
    return Runtime(
        policies=PolicySet.from_text(_ALLOW, source="bench.toml"),
        evidence_dir=folder,
        key=SigningKey.generate(),
    )


async def _call_costs(folder: Path, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with _runtime(folder) as rt:
        t0 = time.perf_counter_ns()
        await rt.run(caller, in_process, 1, principal="bench")
        out["cold start: first process-isolated run (ms)"] = round(
            (time.perf_counter_ns() - t0) / 1e6, 1
        )
        for label, target in (
            ("in-process", inline),
            ("thread", in_thread),
            ("process", in_process),
        ):
            await rt.run(caller, target, 50, principal="bench")  # warm-up
            times = await rt.run(caller, target, n, principal="bench")
            out[f"governed call, isolation {label} (µs median)"] = _med_us(times)
        pool = rt._isolation.pool
        raw = []
        payload_args = (in_process.func.__module__, in_process.func.__qualname__, __file__)
        for i in range(n):
            t0 = time.perf_counter_ns()
            worker = await pool.acquire()
            ok, value = await worker.call(pickle.dumps((*payload_args, (i,), {}), 5))
            assert ok, value
            pool.release(worker)
            raw.append(time.perf_counter_ns() - t0)
        out["raw pool round trip, no governance (µs median)"] = _med_us(raw)
    out["process isolation overhead vs in-process (µs median)"] = round(
        out["governed call, isolation process (µs median)"]
        - out["governed call, isolation in-process (µs median)"],
        1,
    )
    ap = []
    for i in range(min(n, 500) + 20):
        t0 = time.perf_counter_ns()
        await anyio.to_process.run_sync(_plain, i)
        ap.append(time.perf_counter_ns() - t0)
    out["anyio.to_process.run_sync round trip (µs median)"] = _med_us(ap[20:])
    return out


async def _kill_latency(folder: Path, rounds: int) -> dict[str, float]:
    to_kill, to_raise = [], []
    async with _runtime(folder) as rt:
        for r in range(rounds):
            marker = folder / f"spin-{r}"
            handle = await rt.start(spinner, str(marker), principal="bench", ttl=60)
            with anyio.fail_after(30):
                while not marker.exists():  # noqa: ASYNC110 - another process's progress
                    await anyio.sleep(0.002)
            await anyio.sleep(0.01)
            t_wall = time.time_ns() // 1000
            t0 = time.perf_counter_ns()
            rt.revoke(handle.run_id, reason="bench")
            with contextlib.suppress(LeaseRevoked):
                await handle.result()
            to_raise.append(time.perf_counter_ns() - t0)
            lines = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
            killed = [json.loads(x) for x in lines if '"isolation.killed"' in x]
            to_kill.append((killed[0]["t"] - t_wall) * 1000)
    return {
        "revoke to worker killed+reaped (ms median)": round(statistics.median(to_kill) / 1e6, 3),
        "revoke to worker killed+reaped (ms max)": round(max(to_kill) / 1e6, 3),
        "revoke to handle.result() raising (ms median)": round(
            statistics.median(to_raise) / 1e6, 3
        ),
    }


def main(n: int = 2000, rounds: int = 10) -> dict[str, float]:
    """Measure and print every figure; return them by name."""
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-iso-"))
    try:
        figures = anyio.run(_call_costs, folder / "calls", n)
        figures.update(anyio.run(_kill_latency, folder / "kills", rounds))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name:60} {value:>10}")
    return figures


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    main(*((200, 3) if quick else ()))

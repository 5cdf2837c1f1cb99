"""Resident memory over one long run of governed tool calls: it must stay flat.

Run: ``python -m benchmarks.bench_memory [--quick] [N]`` (or via ``python -m benchmarks``).
One run, one agent, ``N`` sequential ``ctx.call(noop_tool, i)`` (default 1,000,000; 100,000
with ``--quick`` or ``TENURE_BENCH_QUICK=1``), every call fully governed and recorded (three
ledger records per call, streamed to disk). ``VmRSS`` from ``/proc/self/status`` is sampled
before the first call and every 10 % of the calls. Reported: RSS at the start, at the end,
the maximum growth, and the growth over the last 90 % of the calls (after warm-up: caches,
allocator arenas), which must stay under ``FLAT_MB``. (A peer we studied kept every audit
entry in memory: +229 MB per 50,000 calls.) The agent yields to the loop every
``YIELD_EVERY`` calls, as any tool doing I/O would.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter_ns

import anyio
import anyio.lowlevel

from benchmarks._report import Report, Target
from benchmarks.bench_core import ALLOW_ALL, noop_tool
from tenure import Context, Runtime, SigningKey, agent
from tenure.policies import PolicySet

__all__ = ["main", "run"]

FULL = 1_000_000
QUICK = 100_000
FLAT_MB = 8.0
YIELD_EVERY = 1_000


def rss_kb() -> int:
    """Resident set size of this process in KiB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmRSS line (not Linux?)")


_SAMPLES: list[tuple[int, int]] = []  # (calls done, RSS KiB)


@agent
async def long_worker(ctx: Context, n: int, every: int) -> int:
    """``n`` governed tool calls, sampling RSS every ``every``; returns elapsed ns."""
    call = ctx.call
    samples = _SAMPLES
    samples.append((0, rss_kb()))
    t0 = perf_counter_ns()
    for i in range(1, n + 1):
        await call(noop_tool, i)
        if i % YIELD_EVERY == 0:
            # A no-await tool never suspends: without this the loop would be blocked for
            # the whole run and the stall detector would (rightly) stop it.
            await anyio.lowlevel.checkpoint()
        if i % every == 0:
            samples.append((i, rss_kb()))
    return perf_counter_ns() - t0


def run(report: Report, *, quick: bool = False, n: int | None = None) -> None:
    """Run ``n`` governed calls in one run and add the memory rows to ``report``."""
    n = n or (QUICK if quick else FULL)
    every = max(1, n // 10)
    root = Path(tempfile.mkdtemp(prefix="tenure-bench-mem-"))
    _SAMPLES.clear()
    ledger_bytes = 0

    async def go() -> int:
        nonlocal ledger_bytes
        policy = PolicySet.from_text(ALLOW_ALL, source="bench-allow-all.toml")
        async with Runtime(
            policies=policy, evidence_dir=root / "runs", key=SigningKey.generate()
        ) as rt:
            handle = await rt.start(long_worker, n, every, principal="bench", ttl=24 * 3600)
            ns: int = await handle.result()
            ledger_bytes = (handle.evidence_path / "ledger.jsonl").stat().st_size
        return ns

    gc.collect()
    try:
        ns = anyio.run(go)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    start = _SAMPLES[0][1] / 1024
    end = _SAMPLES[-1][1] / 1024
    peak = max(kb for _, kb in _SAMPLES) / 1024
    warm = _SAMPLES[1][1] / 1024 if len(_SAMPLES) > 1 else start
    tail = max(kb for _, kb in _SAMPLES[1:]) / 1024 - warm if len(_SAMPLES) > 1 else 0.0
    report.add("memory", f"RSS at start of a {n:,}-call run", start, "MB")
    report.add("memory", f"RSS after {n:,} governed tool calls", end, "MB")
    report.add("memory", "max RSS growth over the run", peak - start, "MB")
    report.add(
        "memory",
        f"RSS growth over the last {n - every:,} calls",
        tail,
        "MB",
        target=Target(FLAT_MB, label=f"≤ {FLAT_MB:g} MB (flat)"),
    )
    report.add("memory", "governed tool call in the long run", ns / n / 1000, "µs")
    report.note(
        "memory: RSS samples (calls: MB) "
        + ", ".join(f"{i // 1000}k: {kb / 1024:.1f}" for i, kb in _SAMPLES)
    )
    report.note(
        f"memory: ledger on disk {ledger_bytes / 1e6:.0f} MB "
        f"({ledger_bytes / n:.0f} bytes per call), streamed, never held in memory"
    )


def main() -> dict[str, float]:
    """Run standalone, print the table and return the figures by name."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    quick = "--quick" in sys.argv[1:] or os.environ.get("TENURE_BENCH_QUICK") == "1"
    report = Report()
    run(report, quick=quick, n=int(args[0]) if args else None)
    report.print()
    return {row.name: row.value for row in report.rows}


if __name__ == "__main__":
    main()

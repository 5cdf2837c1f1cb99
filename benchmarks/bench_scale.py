"""Governance at scale against bare anyio, in the same process (issue 12 and 17 rows).

Run: ``python -m benchmarks.bench_scale [--quick]`` (or as part of ``python -m benchmarks``).
Every runtime uses the default safety settings (``stall_bound`` 1 s, default liveness and
lease times): a figure that needs them relaxed would be a miss, not a pass.

1. per await at depth 1 and inside a delegation chain 100 deep (target: depth 100 costs
   ≤ 1.1× depth 1 — one gate per task, not one wrapper per level);
2. agent fan-out: N delegated agents each making one tool call, N = 10 … 10,000, per
   branch against ``start_soon`` of the same coroutines (target ≤ 60 µs), the longest loop
   turn during it (≤ 50 ms at 10,000, against bare anyio's) and memory per live agent
   (RSS ≤ 4 KB, the median of repeats; tracemalloc bytes and GC-tracked objects beside it);
3. tool fan-out at 10,000 (≤ 1.5× bare);
4. trivial runs: sequential (runs/s, ≥ 2,000) and 1,000 concurrent (all complete);
5. ``rt.revoke`` itself at 1,000 and 10,000 live tasks (≤ 1 ms);
6. the watchdog's CPU with 1,000 idle agents (≤ 2 % of a core);
7. 50,000 sequential delegations: resident memory per finished delegation (flat).
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import anyio
from anyio.abc import TaskStatus

from benchmarks._report import Report, Target
from benchmarks.bench_core import ALLOW_ALL, PRINCIPAL, TTL, noop_tool
from tenure import Context, LeaseRevoked, Runtime, SigningKey, agent
from tenure.policies import PolicySet

__all__ = ["main", "run"]

ROUNDS = 5


def _rss_kb() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


async def _noop(i: int) -> int:
    return i


class _Lag:
    """The longest gap between the loop's turns while it runs (a 1 ms sleeper)."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Started (``tg.start``) before the measured work: a first turn that holds the loop
        # (the bare side's ``start_soon`` loop) is counted too.
        t0 = time.perf_counter()
        task_status.started()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - t0 - 0.001)
            t0 = now


class _GcPauses:
    """The longest full (generation 2) garbage collection while installed, in seconds.

    A wide fan-out's longest loop turn is mostly such a pass over every live task: this
    tells the collector's share of the turn from the runtime's own work, for both sides.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.worst = max(self.worst, time.perf_counter() - self._t0)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        gc.callbacks.append(self._callback)
        try:
            yield
        finally:
            gc.callbacks.remove(self._callback)


# -- governed subjects --------------------------------------------------------------------


@agent
async def await_loop(ctx: Context, n: int) -> int:
    """``n`` checkpoints; nanoseconds per checkpoint loop."""
    sleep = anyio.sleep
    t0 = perf_counter_ns()
    for _ in range(n):
        await sleep(0)
    return perf_counter_ns() - t0


@agent
async def deep(ctx: Context, depth: int, n: int) -> int:
    """Delegate ``depth`` levels down, then run the await loop there."""
    if depth == 0:
        inner: int = await ctx.delegate(await_loop, n)
        return inner
    below: int = await ctx.delegate(deep, depth - 1, n)
    return below


@agent
async def branch(ctx: Context, i: int) -> int:
    """One delegated agent making one tool call."""
    value: int = await ctx.call(noop_tool, i)
    return value


async def _bare_branch(i: int) -> int:
    return await _noop(i)


_LIVE: dict[str, Any] = {}


@agent
async def agent_fan(ctx: Context, n: int) -> int:
    """``n`` agent branches joined; the nanoseconds the block took."""
    t0 = perf_counter_ns()
    async with ctx.parallel() as p:
        for i in range(n):
            p.start(branch, i)
    return perf_counter_ns() - t0


@agent
async def tool_fan(ctx: Context, n: int) -> int:
    """``n`` tool branches joined; the nanoseconds the block took."""
    t0 = perf_counter_ns()
    async with ctx.parallel() as p:
        for i in range(n):
            p.start(noop_tool, i)
    return perf_counter_ns() - t0


@agent
async def trivial(ctx: Context) -> None:
    """Returns at once."""


@agent
async def idler(ctx: Context, i: int) -> None:
    """Parks until released (counted in ``_LIVE``)."""
    _LIVE["parked"] += 1
    if _LIVE["parked"] == _LIVE["n"]:
        _LIVE["ready"].set()
    await _LIVE["release"].wait()


@agent
async def idle_fan(ctx: Context, n: int) -> None:
    """``n`` parked agents."""
    async with ctx.parallel() as p:
        for i in range(n):
            p.start(idler, i)


@agent
async def instant(ctx: Context, i: int) -> int:
    """Never awaits."""
    return i


@agent
async def delegations(ctx: Context, n: int, every: int) -> list[int]:
    """``n`` sequential delegations; RSS sampled every ``every``."""
    samples = []
    for i in range(n):
        await ctx.delegate(instant, i)
        if i % every == 0:
            samples.append(_rss_kb())
    samples.append(_rss_kb())
    return samples


# -- harness ------------------------------------------------------------------------------


class _Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = SigningKey.generate()
        self.policy = PolicySet.from_text(ALLOW_ALL, source="bench-allow-all.toml")

    def runtime(self, **overrides: Any) -> Runtime:
        return Runtime(
            policies=self.policy, evidence_dir=self.root / "runs", key=self.key, **overrides
        )


async def _interleaved(
    bare: Callable[[], Awaitable[float]], governed: Callable[[], Awaitable[float]], rounds: int
) -> tuple[float, float]:
    b: list[float] = []
    g: list[float] = []
    for r in range(rounds + 1):
        pair = []
        for fn in (bare, governed) if r % 2 == 0 else (governed, bare):
            gc.collect()
            pair.append(await fn())
        xb, xg = pair if r % 2 == 0 else pair[::-1]
        if r:
            b.append(xb)
            g.append(xg)
    return statistics.median(b), statistics.median(g)


# -- 1. per await by depth ----------------------------------------------------------------


async def bench_depth(b: _Bench, report: Report, n: int, rounds: int) -> None:
    """Per-await cost at depth 1 and at depth 100, and bare anyio."""

    async def bare() -> float:
        sleep = anyio.sleep
        t0 = perf_counter_ns()
        for _ in range(n):
            await sleep(0)
        return (perf_counter_ns() - t0) / n / 1000

    async with b.runtime() as rt:

        async def depth1() -> float:
            ns: int = await rt.run(await_loop, n, principal=PRINCIPAL, ttl=TTL)
            return ns / n / 1000

        async def depth100() -> float:
            ns: int = await rt.run(deep, 99, n, principal=PRINCIPAL, ttl=TTL)
            return ns / n / 1000

        xb, x1 = await _interleaved(bare, depth1, rounds)
        _, x100 = await _interleaved(depth1, depth100, rounds)
    report.add(
        "scale", "per await, depth 1", x1, "µs", baseline=xb, target=Target(1.05, on="ratio")
    )
    report.add(
        "scale",
        "per await, inside a delegation 100 deep",
        x100,
        "µs",
        baseline=xb,
        target=Target(1.1 * x1, label=f"≤ 1.1× depth 1 ({1.1 * x1:.2f} µs)"),
    )


# -- 2./3. fan-outs ------------------------------------------------------------------------


async def bench_agent_fan(b: _Bench, report: Report, sizes: list[int], rounds: int) -> None:
    """Per agent branch by width; the longest loop turn (both sides) at the widest.

    Both sides run under the same 1 ms lag watcher, so each side's longest loop turn is
    measured the same way (the bare side starts its ``n`` tasks in one turn, as
    ``start_soon`` in a loop does).
    """
    for n in sizes:
        lags: dict[str, list[float]] = {"bare": [], "governed": []}
        pauses: dict[str, list[float]] = {"bare": [], "governed": []}

        async def watched(
            side: str,
            body: Callable[[], Awaitable[int]],
            lags: dict[str, list[float]] = lags,
            pauses: dict[str, list[float]] = pauses,
        ) -> int:
            lag, gcs = _Lag(), _GcPauses()
            with gcs.installed():
                async with anyio.create_task_group() as tg:
                    await tg.start(lag.watch)
                    ns = await body()
                    tg.cancel_scope.cancel()
            lags[side].append(lag.worst)
            pauses[side].append(gcs.worst)
            return ns

        async def bare(n: int = n) -> float:
            async def fan() -> int:
                t0 = perf_counter_ns()
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(_bare_branch, i)
                return perf_counter_ns() - t0

            return await watched("bare", fan) / n / 1000

        async def governed(n: int = n) -> float:
            async with b.runtime() as rt:

                async def fan() -> int:
                    ns: int = await rt.run(agent_fan, n, principal=PRINCIPAL, ttl=TTL)
                    return ns

                return await watched("governed", fan) / n / 1000

        r = max(1, rounds if n <= 1000 else rounds // 2)
        xb, xg = await _interleaved(bare, governed, r)
        report.add(
            "scale",
            f"agent fan-out of {n:,} (delegated agent + 1 tool call), per branch",
            xg,
            "µs",
            baseline=xb,
            target=Target(60),
        )
        if n == sizes[-1]:
            # The warm-up round is in these lists too (``_interleaved`` drops it from the
            # per-branch figures only): the loop-turn figures are medians over every round.
            gc_bare = statistics.median(pauses["bare"]) * 1000
            gc_gov = statistics.median(pauses["governed"]) * 1000
            report.add(
                "scale",
                f"longest loop turn during the fan-out of {n:,} agents",
                statistics.median(lags["governed"]) * 1000,
                "ms",
                baseline=statistics.median(lags["bare"]) * 1000,
                target=Target(50),
                note=f"longest full GC pass: governed {gc_gov:.0f} ms, bare {gc_bare:.0f} ms",
            )


class _Probe:
    """What one parked fleet is measured by: RSS, tracemalloc bytes or GC-tracked objects.

    ``begin`` runs just before the fleet starts (garbage collected first), ``end`` once all
    of it is parked; the figure is per parked task.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._start = 0

    def begin(self) -> None:
        gc.collect()
        if self.kind == "rss":
            self._start = _rss_kb() * 1024
        elif self.kind == "traced":
            tracemalloc.start()
            self._start = tracemalloc.get_traced_memory()[0]
        else:
            self._start = len(gc.get_objects())

    def end(self, n: int) -> float:
        if self.kind == "rss":
            return (_rss_kb() * 1024 - self._start) / n
        gc.collect()  # what is live, not garbage awaiting a pass (not timed)
        if self.kind == "traced":
            used = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            return (used - self._start) / n
        return (len(gc.get_objects()) - self._start) / n


async def _bare_fleet(n: int, probe: _Probe) -> float:
    release = anyio.Event()
    ready = anyio.Event()
    parked = 0

    async def bare_parked() -> None:
        nonlocal parked
        parked += 1
        if parked == n:
            ready.set()
        await release.wait()

    probe.begin()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(bare_parked)
        await ready.wait()
        figure = probe.end(n)
        release.set()
    return figure


async def _governed_fleet(rt: Runtime, n: int, probe: _Probe) -> float:
    _LIVE.update(n=n, parked=0, ready=anyio.Event(), release=anyio.Event())
    probe.begin()
    handle = await rt.start(idle_fan, n, principal=PRINCIPAL, ttl=TTL)
    async with anyio.create_task_group() as tg:

        async def ended() -> None:  # a fleet that can never park fails the benchmark
            await handle.result()
            raise RuntimeError("the parked fleet's run ended before all of it parked")

        tg.start_soon(ended)
        await _LIVE["ready"].wait()
        tg.cancel_scope.cancel()
    figure = probe.end(n)
    _LIVE["release"].set()
    await handle.result()
    return figure


_WARM_UP_FLEET = 50
_EXACT_FLEET = 2_000


def _rss_child(side: str, n: int) -> float:
    """In a fresh process: RSS bytes per parked task of one fleet (after a small warm-up)."""

    async def measure() -> float:
        if side == "bare":
            await _bare_fleet(_WARM_UP_FLEET, _Probe("objects"))
            return await _bare_fleet(n, _Probe("rss"))
        root = Path(tempfile.mkdtemp(prefix="tenure-bench-rss-"))
        try:
            async with _Bench(root).runtime() as rt:
                await _governed_fleet(rt, _WARM_UP_FLEET, _Probe("objects"))
                return await _governed_fleet(rt, n, _Probe("rss"))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return anyio.run(measure)


def _rss_in_fresh_process(side: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scale", "--rss-child", side, str(n)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[-1])


async def bench_live_memory(b: _Bench, report: Report, n: int, rounds: int) -> None:
    """Memory per live (parked) agent, against as many bare parked tasks.

    RSS counts only the pages a fleet adds, so in a process that already ran other fleets
    it depends on what the allocator kept from them (one in-process sample per side swung
    3.97-8.28 KiB between runs, and a bare side after a larger fleet read 0). Each RSS
    sample is therefore taken in a fresh process, after the same imports and a warm-up
    fleet of ``_WARM_UP_FLEET`` (first-use caches): both sides start from the same
    allocator state; ``rounds`` samples each, alternating, the median (spread in the note).
    tracemalloc (the bytes Python allocated for the fleet) and the GC-tracked objects (what
    a full collection walks) are exact, measured here after a warm-up fleet of each side, of
    at most ``_EXACT_FLEET`` tasks (per task the figures do not depend on the width; under
    tracemalloc a lease batch of 10,000 agents' would hold the loop past ``stall_bound``).
    """
    samples: dict[str, list[float]] = {"bare": [], "governed": []}
    for r in range(rounds):
        for side in ("bare", "governed") if r % 2 == 0 else ("governed", "bare"):
            figure = await anyio.to_thread.run_sync(_rss_in_fresh_process, side, n)
            samples[side].append(figure / 1024)
    exact = min(n, _EXACT_FLEET)
    async with b.runtime() as rt:
        await _bare_fleet(exact, _Probe("objects"))
        await _governed_fleet(rt, exact, _Probe("objects"))
        traced = {
            "bare": await _bare_fleet(exact, _Probe("traced")),
            "governed": await _governed_fleet(rt, exact, _Probe("traced")),
        }
        objects = {
            "bare": await _bare_fleet(exact, _Probe("objects")),
            "governed": await _governed_fleet(rt, exact, _Probe("objects")),
        }
    gov, bare_kib = samples["governed"], samples["bare"]
    report.add(
        "scale",
        f"resident memory per live agent ({n:,} parked)",
        statistics.median(gov),
        "KiB",
        baseline=statistics.median(bare_kib),
        target=Target(4),
        note=(
            f"median of {rounds}, each in a fresh process; governed "
            f"{min(gov):.2f}-{max(gov):.2f}, bare {min(bare_kib):.2f}-{max(bare_kib):.2f}"
        ),
    )
    report.add(
        "scale",
        f"Python memory per live agent, tracemalloc ({exact:,} parked)",
        traced["governed"],
        "B",
        baseline=traced["bare"],
    )
    report.add(
        "scale",
        f"GC-tracked objects per live agent ({exact:,} parked)",
        objects["governed"],
        "",
        baseline=objects["bare"],
    )


async def bench_tool_fan(b: _Bench, report: Report, n: int, rounds: int) -> None:
    """Per tool branch at width ``n``."""

    async def bare() -> float:
        t0 = perf_counter_ns()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(_noop, i)
        return (perf_counter_ns() - t0) / n / 1000

    async def governed() -> float:
        async with b.runtime() as rt:
            ns: int = await rt.run(tool_fan, n, principal=PRINCIPAL, ttl=TTL)
        return ns / n / 1000

    xb, xg = await _interleaved(bare, governed, rounds)
    report.add(
        "scale",
        f"tool fan-out of {n:,}, per branch",
        xg,
        "µs",
        baseline=xb,
        target=Target(1.5, on="ratio"),
    )


# -- 4. trivial runs ----------------------------------------------------------------------


async def bench_runs(b: _Bench, report: Report, sequential: int, concurrent: int) -> None:
    """Sequential runs per second, and ``concurrent`` runs started at once."""
    async with b.runtime() as rt:
        for _ in range(20):
            await rt.run(trivial, principal=PRINCIPAL, ttl=60)
        cpu0 = time.process_time()
        t0 = perf_counter_ns()
        for _ in range(sequential):
            await rt.run(trivial, principal=PRINCIPAL, ttl=60)
        wall = (perf_counter_ns() - t0) / 1e9
        cpu = time.process_time() - cpu0
        report.add(
            "scale", "trivial runs, sequential", sequential / wall, "/s", target=Target(2000, ">=")
        )
        report.add(
            "scale",
            "trivial run, CPU per run (sequential)",
            cpu / sequential * 1000,
            "ms",
            target=Target(0.3, label="≤ 0.3 ms + the fsync"),
        )
        t0 = perf_counter_ns()
        handles = [await rt.start(trivial, principal=PRINCIPAL, ttl=600) for _ in range(concurrent)]
        done = 0
        for h in handles:
            await h.result()
            done += 1
        wall = (perf_counter_ns() - t0) / 1e9
    report.add(
        "scale",
        f"trivial runs, {concurrent:,} concurrent: completed",
        done,
        "",
        target=Target(concurrent, ">=", label=f"all {concurrent:,}"),
        note=f"{wall * 1000:.0f} ms for all",
    )


# -- 5. rt.revoke itself ------------------------------------------------------------------


async def bench_revoke_call(b: _Bench, report: Report, sizes: list[int]) -> None:
    """How long ``rt.revoke`` itself holds the caller (and the loop) with N live tasks."""
    for n in sizes:
        async with b.runtime() as rt:
            _LIVE.update(n=n, parked=0, ready=anyio.Event(), release=anyio.Event())
            gc.collect()  # never while the fleet is live (a stall by the benchmark itself)
            handle = await rt.start(idle_fan, n, principal=PRINCIPAL, ttl=TTL)
            await _LIVE["ready"].wait()
            t0 = perf_counter_ns()
            rt.revoke(handle.run_id, reason="benchmark")
            took = (perf_counter_ns() - t0) / 1e6
            with contextlib.suppress(LeaseRevoked):
                await handle.result()
        report.add(
            "scale", f"rt.revoke call itself, {n:,} live tasks", took, "ms", target=Target(1)
        )


# -- 6. watchdog CPU ----------------------------------------------------------------------


async def bench_watchdog(b: _Bench, report: Report, n: int, seconds: float) -> None:
    """CPU of the process while ``n`` governed agents idle, against ``n`` bare idlers."""

    async def bare_cpu() -> float:
        release = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(release.wait)
            await anyio.sleep(0.2)
            c0 = time.process_time()
            await anyio.sleep(seconds)
            used = time.process_time() - c0
            release.set()
        return used

    bare = await bare_cpu()
    async with b.runtime() as rt:
        _LIVE.update(n=n, parked=0, ready=anyio.Event(), release=anyio.Event())
        handle = await rt.start(idle_fan, n, principal=PRINCIPAL, ttl=TTL)
        await _LIVE["ready"].wait()
        await anyio.sleep(0.2)
        c0 = time.process_time()
        await anyio.sleep(seconds)
        used = time.process_time() - c0
        _LIVE["release"].set()
        await handle.result()
    report.add(
        "scale",
        f"watchdog with {n:,} idle agents, share of a core",
        used / seconds * 100,
        "%",
        baseline=bare / seconds * 100,
        target=Target(2),
        note=f"{seconds:g} s window, includes lease renewals and re-verification",
    )


# -- 7. memory per finished delegation ------------------------------------------------------


async def bench_delegation_memory(b: _Bench, report: Report, n: int) -> None:
    """RSS over ``n`` sequential delegations: growth per finished delegation."""
    async with b.runtime() as rt:
        await rt.run(delegations, 2000, 1000, principal=PRINCIPAL, ttl=TTL)
        samples: list[int] = await rt.run(
            delegations, n, max(1, n // 10), principal=PRINCIPAL, ttl=TTL
        )
    first, last = samples[1], samples[-1]  # after the first tenth: caches warm
    per = (last - first) * 1024 / (n - n // 10)
    report.add(
        "scale",
        f"resident memory per finished delegation ({n:,} sequential)",
        max(per, 0.0),
        "B",
        target=Target(100, label="≤ 100 B (flat)"),
        note="RSS KiB at each tenth: " + ", ".join(str(s) for s in samples),
    )


# -- entry points -------------------------------------------------------------------------


def run(report: Report, *, quick: bool = False) -> None:
    """Run every scale benchmark and add its rows to ``report``."""
    rounds = 3 if quick else ROUNDS
    root = Path(tempfile.mkdtemp(prefix="tenure-bench-scale-"))
    bench = _Bench(root)
    widths = [10, 100, 1_000] if quick else [10, 100, 1_000, 10_000]

    async def everything() -> None:
        await bench_depth(bench, report, 20_000 if quick else 100_000, rounds)
        await bench_agent_fan(bench, report, widths, rounds)
        await bench_live_memory(bench, report, 1_000 if quick else 10_000, rounds)
        await bench_tool_fan(bench, report, 1_000 if quick else 10_000, rounds)
        await bench_runs(bench, report, 200 if quick else 1_000, 100 if quick else 1_000)
        await bench_revoke_call(bench, report, [1_000] if quick else [1_000, 10_000])
        await bench_watchdog(bench, report, 1_000, 2.0 if quick else 9.0)
        await bench_delegation_memory(bench, report, 5_000 if quick else 50_000)

    try:
        anyio.run(everything)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.note(
        f"scale: default RuntimeConfig (stall_bound 1 s); median of {rounds} rounds "
        f"interleaved with bare anyio; peak RSS {peak / 1024:.0f} MB"
    )


def main() -> dict[str, float]:
    """Run standalone, print the table and return the figures by name."""
    report = Report()
    run(report, quick="--quick" in sys.argv[1:] or os.environ.get("TENURE_BENCH_QUICK") == "1")
    report.print()
    return {row.name: row.value for row in report.rows}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss-child"]:
        print(_rss_child(sys.argv[2], int(sys.argv[3])))
    else:
        main()

"""Core runtime cost against bare anyio, measured in the same process, interleaved.

Run: ``python -m benchmarks.bench_core [--quick]`` (or as part of ``python -m benchmarks``).
Every figure is the median of ``ROUNDS`` measured rounds (one unmeasured warm-up round
first); in each round the bare-anyio baseline and the governed figure are taken back to
back, their order alternating between rounds. Governed runs use an allow-all policy, a
fresh in-memory Ed25519 key, evidence in a temporary folder on the same disk as ``/tmp``
and the default light lineage (no exporter): every step is decided, recorded and spanned.

1. per await: 100,000 ``await anyio.sleep(0)`` inside an agent vs inside ``anyio.run``
   (time taken inside the loop only; target ≤ 1.05× bare).
2. revoke to halt: N live agents asleep; ``rt.revoke`` until ``handle.result()`` raises,
   vs ``tg.cancel_scope.cancel()`` until the task group exits (target ≤ 1.1× bare); the
   agents' code after the sleep and the ledger's ``step.start`` records after the
   revocation are counted (must be 0).
   ``rt.revoke`` itself is timed too (target ≤ 1 ms at 10,000).
3. chain: 1,000 sequential ``ctx.call(noop_tool, i)`` (target ≤ 20 µs per step).
4. fan-out: 1,000 ``p.start(noop_tool, i)`` joined (target ≤ 1.5× bare per branch).
5. trivial run: ``rt.run`` of an agent that returns at once, default durability and
   ``fsync="never"`` (target ≤ 0.3 ms of work + the fsync the default spends at run end).

Every runtime runs at the default ``RuntimeConfig`` (``stall_bound`` 1 s).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import anyio

from benchmarks._report import Report, Target
from tenure import Context, GovernanceViolation, LeaseRevoked, Runtime, SigningKey, agent, tool
from tenure.policies import PolicySet

__all__ = ["main", "run"]

ALLOW_ALL = """
version = 1
default = "deny"

[[rules]]
id = "bench-allow-everything"
effect = "allow"
"""

ROUNDS = 7
WARMUP = 1
PRINCIPAL = "bench"
TTL = 3600.0
HALT_TIMEOUT = 300.0  # a halt slower than this is reported as a crash, never a hang


# -- governed subjects (module level: attestation hashes registered code once) ------------


@tool
async def noop_tool(i: int) -> int:
    """The cheapest tool: returns its argument."""
    return i


async def _bare_noop(i: int) -> int:
    return i


@agent
async def await_loop(ctx: Context, n: int) -> int:
    """``n`` bare checkpoints; returns the nanoseconds spent in the loop."""
    sleep = anyio.sleep
    t0 = perf_counter_ns()
    for _ in range(n):
        await sleep(0)
    return perf_counter_ns() - t0


@agent
async def chain(ctx: Context, n: int) -> int:
    """``n`` sequential governed tool calls; returns the nanoseconds they took."""
    call = ctx.call
    t0 = perf_counter_ns()
    for i in range(n):
        await call(noop_tool, i)
    return perf_counter_ns() - t0


@agent
async def fan_out(ctx: Context, n: int) -> int:
    """``n`` parallel governed tool calls, joined; returns the nanoseconds they took."""
    t0 = perf_counter_ns()
    async with ctx.parallel() as p:
        for i in range(n):
            p.start(noop_tool, i)
    return perf_counter_ns() - t0


@agent
async def trivial(ctx: Context) -> None:
    """Returns at once."""
    return None


class _Fleet:
    """Shared counters of the sleeping agents (reset before each measured run)."""

    n = 0
    started = 0
    after = 0
    ready: anyio.Event | None = None

    def reset(self, n: int) -> None:
        self.n, self.started, self.after = n, 0, 0
        self.ready = anyio.Event()


_FLEET = _Fleet()


@agent
async def sleeper(ctx: Context, i: int) -> None:
    """Sleeps an hour; anything after the sleep counts as a step after revocation."""
    fleet = _FLEET
    fleet.started += 1
    if fleet.started == fleet.n and fleet.ready is not None:
        fleet.ready.set()
    await anyio.sleep(3600)
    fleet.after += 1


@agent
async def fleet_root(ctx: Context, n: int) -> None:
    """Fans out to ``n`` sleepers."""
    async with ctx.parallel() as p:
        for i in range(n):
            p.start(sleeper, i)


# -- harness ------------------------------------------------------------------------------


class _Bench:
    """Key, policy and a temporary evidence folder shared by every runtime of the suite."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = SigningKey.generate()
        self.policy = PolicySet.from_text(ALLOW_ALL, source="bench-allow-all.toml")

    def runtime(self, **overrides: Any) -> Runtime:
        # The default safety settings (stall_bound, liveness): a figure that needed them
        # relaxed would be a miss, not a pass.
        return Runtime(
            policies=self.policy, evidence_dir=self.root / "runs", key=self.key, **overrides
        )


async def _interleaved(
    bare: Callable[[], Awaitable[float]], governed: Callable[[], Awaitable[float]], rounds: int
) -> tuple[float, float]:
    """Medians of (bare, governed) over ``rounds`` rounds after one warm-up round."""
    b: list[float] = []
    g: list[float] = []
    for r in range(rounds + WARMUP):
        pair: list[float] = []
        for fn in (bare, governed) if r % 2 == 0 else (governed, bare):
            gc.collect()
            pair.append(await fn())
        xb, xg = pair if r % 2 == 0 else pair[::-1]
        if r >= WARMUP:
            b.append(xb)
            g.append(xg)
    return statistics.median(b), statistics.median(g)


# -- 1. per await -------------------------------------------------------------------------


async def _bare_await_loop(n: int) -> int:
    sleep = anyio.sleep
    t0 = perf_counter_ns()
    for _ in range(n):
        await sleep(0)
    return perf_counter_ns() - t0


async def bench_per_await(b: _Bench, report: Report, n: int, rounds: int) -> None:
    """100,000 checkpoints bare vs inside a governed agent (loop time only)."""

    async def bare() -> float:
        return (await _bare_await_loop(n)) / n / 1000

    async def governed() -> float:
        async with b.runtime() as rt:
            ns: int = await rt.run(await_loop, n, principal=PRINCIPAL, ttl=TTL)
        return ns / n / 1000

    xb, xg = await _interleaved(bare, governed, rounds)
    report.add(
        "core",
        f"per await ({n:,} × sleep(0))",
        xg,
        "µs",
        baseline=xb,
        target=Target(1.05, on="ratio"),
    )


# -- 2. revoke to halt --------------------------------------------------------------------


async def _bare_halt(n: int) -> int:
    started = 0
    ready = anyio.Event()

    async def sleeping() -> None:
        nonlocal started
        started += 1
        if started == n:
            ready.set()
        await anyio.sleep(3600)

    gc.collect()  # before the fleet exists: the same heap state as the governed side
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(sleeping)
        await ready.wait()
        t0 = perf_counter_ns()
        tg.cancel_scope.cancel()
    return perf_counter_ns() - t0


def _steps_after_revocation(run_dir: Path) -> int:
    """``step.start`` records written after the first ``lease.revoked`` record."""
    after = 0
    revoked = False
    with open(run_dir / "ledger.jsonl", encoding="utf-8") as f:
        for line in f:
            kind = json.loads(line)["kind"]
            if kind == "lease.revoked":
                revoked = True
            elif revoked and kind == "step.start":
                after += 1
    if not revoked:
        raise RuntimeError(f"{run_dir}: no lease.revoked record")
    return after


async def bench_revoke(b: _Bench, report: Report, sizes: list[int], rounds: int) -> None:
    """Revoke-to-halt for each fleet size, against anyio cancelling as many sleepers."""
    for n in sizes:
        await _bench_revoke_one(b, report, n, rounds)


async def _bench_revoke_one(b: _Bench, report: Report, n: int, rounds: int) -> None:
    leaks = {"body": 0, "ledger": 0}
    setup: list[float] = []
    calls: list[float] = []

    async def bare() -> float:
        return (await _bare_halt(n)) / 1e6

    async def governed() -> float:
        async with b.runtime() as rt:
            _FLEET.reset(n)
            assert _FLEET.ready is not None
            # Collected before the fleet starts, never while it is live: a full collection
            # over 10,000 live tasks holds the loop past the default stall bound, and the
            # stall detector rightly stops the run for it.
            gc.collect()
            t_setup = perf_counter_ns()
            handle = await rt.start(fleet_root, n, principal=PRINCIPAL, ttl=TTL)
            with anyio.fail_after(600):
                await _FLEET.ready.wait()
            setup.append((perf_counter_ns() - t_setup) / 1e6)
            t0 = perf_counter_ns()
            rt.revoke(handle.run_id, reason="benchmark")
            calls.append((perf_counter_ns() - t0) / 1e6)
            try:
                with anyio.fail_after(HALT_TIMEOUT):
                    await handle.result()
            except LeaseRevoked:
                elapsed = perf_counter_ns() - t0
            except GovernanceViolation as exc:
                raise RuntimeError(f"revoked run stopped with {exc!r}") from exc
            else:
                raise RuntimeError("the revoked run returned normally")
            leaks["body"] += _FLEET.after
            leaks["ledger"] += _steps_after_revocation(handle.evidence_path)
        return elapsed / 1e6

    xb, xg = await _interleaved(bare, governed, rounds)
    tasks = f"{n:,} task{'s' if n != 1 else ''}"
    report.add(
        "core",
        f"revoke → halt, {tasks} live",
        xg,
        "ms",
        baseline=xb,
        target=Target(1.1, on="ratio"),
    )
    report.add(
        "core",
        f"rt.revoke itself, {tasks} live",
        statistics.median(calls),
        "ms",
        target=Target(1),
    )
    report.add(
        "core",
        f"steps after revoke, {tasks} (all rounds)",
        leaks["body"] + leaks["ledger"],
        "",
        target=Target(0, label="= 0"),
        note=f"agent code {leaks['body']}, ledger step.start {leaks['ledger']}",
    )
    report.note(
        f"revoke, {tasks}: setup (start → all asleep) median "
        f"{statistics.median(setup):.1f} ms, not timed"
    )


# -- 3./4. chain and fan-out --------------------------------------------------------------


async def bench_chain(b: _Bench, report: Report, n: int, rounds: int) -> None:
    """``n`` sequential governed tool calls vs ``n`` awaits of the bare function."""

    async def bare() -> float:
        t0 = perf_counter_ns()
        for i in range(n):
            await _bare_noop(i)
        return (perf_counter_ns() - t0) / n / 1000

    async def governed() -> float:
        async with b.runtime() as rt:
            ns: int = await rt.run(chain, n, principal=PRINCIPAL, ttl=TTL)
        return ns / n / 1000

    xb, xg = await _interleaved(bare, governed, rounds)
    report.add(
        "core",
        f"chain of {n:,} governed tool calls, per step",
        xg,
        "µs",
        baseline=xb,
        target=Target(20),
    )


async def bench_fan_out(b: _Bench, report: Report, n: int, rounds: int) -> None:
    """``n`` parallel governed tool calls joined vs a bare task group of ``n``."""

    async def bare() -> float:
        t0 = perf_counter_ns()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(_bare_noop, i)
        return (perf_counter_ns() - t0) / n / 1000

    async def governed() -> float:
        async with b.runtime() as rt:
            ns: int = await rt.run(fan_out, n, principal=PRINCIPAL, ttl=TTL)
        return ns / n / 1000

    xb, xg = await _interleaved(bare, governed, rounds)
    report.add(
        "core",
        f"fan-out of {n:,} governed tool calls, per branch",
        xg,
        "µs",
        baseline=xb,
        target=Target(1.5, on="ratio"),
    )


# -- 5. trivial run -----------------------------------------------------------------------


def _fsync_ms(directory: Path, times: int = 21) -> float:
    """Median cost of writing 200 bytes to a file and fsyncing it, on the evidence disk."""
    path = directory / "fsync-probe"
    out: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(times):
            os.write(fd, b"x" * 200)
            t0 = perf_counter_ns()
            os.fsync(fd)
            out.append((perf_counter_ns() - t0) / 1e6)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(out)


async def _count_fsyncs(rt: Runtime) -> int:
    """How many ``os.fsync`` calls one trivial run makes (untimed)."""
    real = os.fsync
    count = 0

    def counting(fd: Any) -> None:
        nonlocal count
        count += 1
        real(fd)

    os.fsync = counting
    try:
        await rt.run(trivial, principal=PRINCIPAL, ttl=60)
    finally:
        os.fsync = real
    return count


async def bench_trivial(b: _Bench, report: Report, per_round: int, rounds: int) -> None:
    """ms per trivial run, default durability and ``fsync="never"``, vs a bare task."""
    async with b.runtime() as durable, b.runtime(fsync="never") as fast:
        fsyncs = await _count_fsyncs(durable)
        fsyncs_never = await _count_fsyncs(fast)

        async def bare() -> float:
            t0 = perf_counter_ns()
            for _ in range(per_round):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_bare_noop, 0)
            return (perf_counter_ns() - t0) / per_round / 1e6

        def governed(rt: Runtime) -> Callable[[], Awaitable[float]]:
            async def one() -> float:
                t0 = perf_counter_ns()
                for _ in range(per_round):
                    await rt.run(trivial, principal=PRINCIPAL, ttl=60)
                return (perf_counter_ns() - t0) / per_round / 1e6

            return one

        xb, xd = await _interleaved(bare, governed(durable), rounds)
        xb2, xn = await _interleaved(bare, governed(fast), rounds)
    one_fsync = _fsync_ms(b.root)
    report.add(
        "core",
        'trivial run, fsync="never"',
        xn,
        "ms",
        baseline=xb2,
        target=Target(0.3, label="≤ 0.3 ms"),
        note=f"{fsyncs_never} fsyncs",
    )
    report.add(
        "core",
        "trivial run, default durability",
        xd,
        "ms",
        baseline=xb,
        target=Target(0.3 + one_fsync, label=f"≤ 0.3 ms + 1 fsync ({one_fsync:.2f} ms)"),
        note=f"{fsyncs} fsyncs/run",
    )
    report.add("core", "one fsync of 200 bytes on the evidence disk", one_fsync, "ms")


# -- entry points -------------------------------------------------------------------------


def run(report: Report, *, quick: bool = False) -> None:
    """Run every core benchmark and add its rows to ``report``."""
    rounds = 3 if quick else ROUNDS
    root = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    bench = _Bench(root)

    async def everything() -> None:
        await bench_per_await(bench, report, 20_000 if quick else 100_000, rounds)
        await bench_revoke(bench, report, [1, 1_000] if quick else [1, 1_000, 10_000], rounds)
        await bench_chain(bench, report, 1_000, rounds)
        await bench_fan_out(bench, report, 1_000, rounds)
        await bench_trivial(bench, report, 20 if quick else 50, rounds)

    try:
        anyio.run(everything)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.note(
        f"core: median of {rounds} rounds (+{WARMUP} warm-up), bare and governed "
        f"interleaved; allow-all policy, light lineage, evidence on local disk"
    )


def main() -> dict[str, float]:
    """Run standalone, print the table and return the figures by name."""
    report = Report()
    run(report, quick="--quick" in sys.argv[1:] or os.environ.get("TENURE_BENCH_QUICK") == "1")
    report.print()
    return {row.name: row.value for row in report.rows}


if __name__ == "__main__":
    main()

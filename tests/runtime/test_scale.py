"""Scale under the default safety settings: wide fan-outs, many runs, deep and long chains.

Every runtime here uses the default ``stall_bound`` (1 s) and liveness settings: the
runtime's own work must never look like a stalled loop. The tests assert completion and the
absence of a ``loop.stall``, never a time (performance is measured in ``benchmarks/``).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
from collections import Counter
from pathlib import Path
from typing import Any

from opentelemetry import trace

from tenure import Context, Runtime, SigningKey, agent, tool
from tenure.evidence import verify_run
from tenure.lineage._handle import _Current
from tenure.policies import PolicySet
from tenure.runtime.kernel._gate import Gate
from tenure.runtime.kernel._lease import Lease
from tenure.runtime.kernel._state import LeaseState, Step

KEY = SigningKey.generate()


def _runtime(policy: PolicySet, evidence: Path, **kw: Any) -> Runtime:
    return Runtime(policies=policy, evidence_dir=evidence, key=KEY, **kw)


def _kinds(run_dir: Path) -> list[str]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line)["kind"] for line in lines]


def _no_stall(rt: Runtime, *run_dirs: Path) -> None:
    assert rt._stall is not None and rt._stall.breaches == 0
    for d in run_dirs:
        assert "stall" not in _kinds(d)


@tool
async def echo(i: int) -> int:
    """Returns its argument."""
    return i


@agent
async def worker(ctx: Context, i: int) -> int:
    """One governed tool call."""
    value: int = await ctx.call(echo, i)
    return value


@agent
async def fan(ctx: Context, n: int) -> list[int]:
    """``n`` delegated agents in parallel, each making one tool call."""
    async with ctx.parallel() as p:
        for i in range(n):
            p.start(worker, i)
    return p.results


async def test_fan_out_of_10000_agents_completes_under_the_default_stall_bound(
    allow_all: PolicySet, evidence: Path
) -> None:
    """10,000 parallel agents, each a delegation with its own signed lease and a tool call:
    every result arrives, no ``loop.stall``, and the evidence verifies."""
    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(fan, 10_000, principal="alice", ttl=600)
        results = await handle.result()
        _no_stall(rt, handle.evidence_path)
    assert results == list(range(10_000))
    report = verify_run(handle.evidence_path, KEY.public_key)
    assert report.ok, report.problem


async def test_100_concurrent_runs_of_100_agents_all_complete(
    allow_all: PolicySet, evidence: Path
) -> None:
    """One run's fan-out never stalls the loop for the others: all 100 runs complete."""
    results: list[list[int]] = []

    async with _runtime(allow_all, evidence) as rt:
        handles = [await rt.start(fan, 100, principal="alice", ttl=600) for _ in range(100)]
        for handle in handles:
            results.append(await handle.result())
        _no_stall(rt, *(h.evidence_path for h in handles))
    assert results == [list(range(100))] * 100


@agent
async def hop(ctx: Context, left: int) -> int:
    """Delegates to itself until ``left`` reaches 0; returns the depth it reached."""
    if left == 0:
        return 0
    depth: int = await ctx.delegate(hop, left - 1)
    return depth + 1


async def test_delegation_chain_1000_deep_works(allow_all: PolicySet, evidence: Path) -> None:
    """Depth is bounded by the ``max_depth`` budget, not by Python's recursion limit."""
    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(hop, 1000, principal="alice", ttl=600)
        assert await handle.result() == 1000
        _no_stall(rt, handle.evidence_path)
    assert verify_run(handle.evidence_path, KEY.public_key).ok


async def test_max_depth_budget_bounds_a_deep_chain(evidence: Path) -> None:
    """With ``max_depth = 50`` the 51st level is refused by the budget, recorded."""
    policy = PolicySet.from_text(
        'version = 1\ndefault = "deny"\n[[rules]]\nid = "all"\neffect = "allow"\n'
        "[budgets]\nmax_depth = 50\n",
        source="depth.toml",
    )
    async with _runtime(policy, evidence) as rt:
        handle = await rt.start(hop, 200, principal="alice", ttl=600)
        try:
            await handle.result()
        except Exception as exc:  # the budget's PolicyDenied, plainly
            assert getattr(exc, "check", "") == "budget.max_depth"
        else:  # pragma: no cover
            raise AssertionError("the chain went past max_depth")


@agent
async def instant(ctx: Context, i: int) -> int:
    """Never awaits."""
    return i


@agent
async def delegate_loop(ctx: Context, n: int) -> int:
    """``n`` sequential delegations to an agent that never awaits."""
    total = 0
    for i in range(n):
        total += await ctx.delegate(instant, i)
    return total


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


async def test_sequential_delegations_neither_stall_the_loop_nor_grow_memory(
    allow_all: PolicySet, evidence: Path
) -> None:
    """20,000 delegations in a row to an agent that never awaits: the loop keeps turning
    (no stall), finished leases and steps are released, memory stays flat (loosely: under
    1 KB per delegation between the first and the last 10,000; the benchmark measures it)."""
    async with _runtime(allow_all, evidence) as rt:
        await rt.run(delegate_loop, 10_000, principal="alice", ttl=600)
        before = _rss_kb()
        handle = await rt.start(delegate_loop, 20_000, principal="alice", ttl=600)
        run: Any = handle._run
        assert await handle.result() == sum(range(20_000))
        grown = _rss_kb() - before
        _no_stall(rt, handle.evidence_path)
        assert len(run.leases) == 0 and len(run.steps) == 0
    assert grown < 10_000, f"RSS grew {grown} KB over 20,000 delegations"


@agent
async def chain(ctx: Context, n: int) -> int:
    """A delegation chain ``n`` deep, one tool call at the bottom."""
    if n == 0:
        value: int = await ctx.call(echo, 7)
        return value
    below: int = await ctx.delegate(chain, n - 1)
    return below


async def test_finished_agents_leave_no_reference_cycles_for_the_garbage_collector(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Branches and delegations that ended are freed at once by reference counting: nothing
    of theirs (task, step, lease state, gate, context) waits for a collector pass, which at
    10,000 agents is what holds the loop longest."""
    governed = (Step, LeaseState, Gate, Lease, asyncio.Task, Context)
    async with _runtime(allow_all, evidence) as rt:
        await rt.run(fan, 20, principal="alice", ttl=60)  # warm: imports, caches
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            assert await rt.run(fan, 200, principal="alice", ttl=60) == list(range(200))
            assert await rt.run(chain, 30, principal="alice", ttl=60) == 7
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, governed)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []


_PARKED: dict[str, Any] = {}


@agent
async def parked(ctx: Context, i: int) -> int:
    """Parks until released; notes the current OpenTelemetry span and its own span."""
    current = trace.get_current_span().get_span_context()
    _PARKED["spans"].append((current.span_id, ctx.trace_carrier["traceparent"]))
    if len(_PARKED["spans"]) == _PARKED["n"]:
        _PARKED["ready"].set()
    await _PARKED["release"].wait()
    return i


@agent
async def park_fan(ctx: Context, n: int) -> list[int]:
    """``n - 1`` parked branches and one parked delegation (its own task), all at once."""
    async with ctx.parallel() as p:
        for i in range(n - 1):
            p.start(parked, i)
        delegated: int = await ctx.delegate(parked, n - 1)
    return [*p.results, delegated]


async def test_a_parked_agent_keeps_no_span_token_scope_set_or_trace_id_of_its_own(
    allow_all: PolicySet, evidence: Path
) -> None:
    """What every live agent holds is what a full collection walks: its body's span is made
    current without a token to reset (none of ``_Current``, ``Token`` per agent), its
    granted scopes are a set it shares, its span shares the run's trace-id string, and
    Tenure's own objects per agent are the ten it needs (step, lease state, lease, claims,
    snapshot, span handle, gate, port, context, branch handle: the task is driven by a
    generator, not a wrapper object); the current span in each body (branch and
    delegation) is still the agent's own."""
    n = 200
    async with _runtime(allow_all, evidence) as rt:
        _PARKED.update(n=4, spans=[], ready=asyncio.Event(), release=asyncio.Event())
        _PARKED["release"].set()
        await rt.run(park_fan, 4, principal="alice", ttl=60)  # warm: imports, caches
        _PARKED.update(n=n, spans=[], ready=asyncio.Event(), release=asyncio.Event())
        gc.collect()
        before = {id(o) for o in gc.get_objects()}
        handle = await rt.start(park_fan, n, principal="alice", ttl=60)
        await _PARKED["ready"].wait()
        gc.collect()
        new = Counter(type(o) for o in gc.get_objects() if id(o) not in before)
        run: Any = handle._run
        agents = [s for s in run.steps.values() if s.action == "invoke_agent"]
        trace_ids = {id(s.span.trace_id) for s in agents}
        _PARKED["release"].set()
        assert await handle.result() == list(range(n))
    assert len(agents) == n + 1  # the fan and its n parked agents
    assert trace_ids == {id(agents[0].span.trace_id)}
    assert new[_Current] == 0
    assert new[contextvars.Token] < n // 10
    assert new[frozenset] < n // 10
    ours = {t.__qualname__: c for t, c in new.items() if t.__module__.startswith("tenure.")}
    assert sum(ours.values()) < 10 * (n + 1) + 50, ours  # n + 1 agents, and the run's own
    for span_id, traceparent in _PARKED["spans"]:
        assert traceparent.split("-")[2] == f"{span_id:016x}"

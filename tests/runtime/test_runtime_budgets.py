"""Budgets and rate limits at the runtime: exceeding one stops the whole run, fail closed.

Each test sets one limit, exceeds it from a real agent, and checks that ``handle.result()``
raises :class:`PolicyDenied` naming the limit (the check the budget tracker produces), that
nothing ran after the stop (the agent that catches the refusal is not resumed), that a
``violation`` record and a ``run.end`` with status ``violation`` name it, and that the
ledger verifies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tenure import Context, PolicyDenied, RunHandle, Runtime, SigningKey, agent, tool
from tenure.evidence import verify_run
from tenure.policies import PolicySet

ALLOW = """
version = 1
default = "deny"

[[rules]]
id = "allow-all"
effect = "allow"
"""


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def _runtime(evidence: Path, key: SigningKey, extra: str, **kw: Any) -> Runtime:
    policy = PolicySet.from_text(ALLOW + extra, source="budgets.toml")
    return Runtime(policies=policy, evidence_dir=evidence, key=key, **kw)


async def _stopped(handle: RunHandle, key: SigningKey, check: str) -> PolicyDenied:
    """The run ended with PolicyDenied(check); the stop is recorded; the ledger verifies."""
    with pytest.raises(PolicyDenied) as info:
        await handle.result()
    exc = info.value
    assert exc.check == check, exc
    assert exc.run_id == handle.run_id
    recs = _records(handle.evidence_path)
    violations = [r for r in recs if r["kind"] == "violation"]
    assert violations and violations[0]["check"] == check
    assert violations[0]["error"] == "PolicyDenied"
    [end] = [r for r in recs if r["kind"] == "run.end"]
    assert (end["status"], end["check"]) == ("violation", check)
    rep = verify_run(handle.evidence_path, key.public_key)
    assert rep.ok, rep.failure_line()
    return exc


class _Counter:
    """A tool that counts its runs, and an agent that calls it n times, swallowing refusals."""

    def __init__(self) -> None:
        self.ran = 0
        self.after_refusal: list[str] = []

        @tool(name="ping")
        async def ping() -> int:
            self.ran += 1
            return self.ran

        self.ping = ping

        @agent(name="pinger")
        async def pinger(ctx: Context, n: int) -> None:
            for _ in range(n):
                try:
                    await ctx.call(ping)
                except PolicyDenied:
                    # An uncooperative agent: it is stopped anyway, never resumed again.
                    self.after_refusal.append("caught")
                    await anyio.lowlevel.checkpoint()
                    self.after_refusal.append("resumed")

        self.pinger = pinger


async def test_max_steps_stops_the_run(evidence: Path, key: SigningKey) -> None:
    c = _Counter()
    async with _runtime(evidence, key, "[budgets]\nmax_steps = 3\n") as rt:
        handle = await rt.start(c.pinger, 10, principal="alice")
        exc = await _stopped(handle, key, "budget.max_steps")
    # step 1 is the agent itself, steps 2-3 the first two pings; step 4 is refused.
    assert c.ran == 2
    assert "max_steps=3" in str(exc)
    assert c.after_refusal == ["caught"]


async def test_max_tool_calls_stops_the_run(evidence: Path, key: SigningKey) -> None:
    c = _Counter()
    async with _runtime(evidence, key, "[budgets]\nmax_tool_calls = 4\n") as rt:
        handle = await rt.start(c.pinger, 10, principal="alice")
        await _stopped(handle, key, "budget.max_tool_calls")
    assert c.ran == 4
    assert "resumed" not in c.after_refusal


async def test_max_depth_stops_a_delegation_chain(evidence: Path, key: SigningKey) -> None:
    reached: list[int] = []

    @agent(name="nest")
    async def nest(ctx: Context, level: int) -> None:
        reached.append(level)
        await ctx.delegate(nest, level + 1)

    async with _runtime(evidence, key, "[budgets]\nmax_depth = 2\n") as rt:
        handle = await rt.start(nest, 0, principal="alice")
        exc = await _stopped(handle, key, "budget.max_depth")
    assert reached == [0, 1, 2]  # depth 3 is refused before it starts
    assert "depth 3" in str(exc)


async def test_max_concurrency_stops_a_fan_out(evidence: Path, key: SigningKey) -> None:
    started = 0
    hold = anyio.Event()

    @agent(name="branch")
    async def branch(ctx: Context) -> None:
        nonlocal started
        started += 1
        await hold.wait()

    @agent(name="fan")
    async def fan(ctx: Context) -> None:
        async with ctx.parallel() as p:
            for _ in range(5):
                p.start(branch)

    # The root agent plus 3 branches are 4 live governed tasks; the 4th branch is a 5th.
    async with _runtime(evidence, key, "[budgets]\nmax_concurrency = 4\n") as rt:
        handle = await rt.start(fan, principal="alice")
        await _stopped(handle, key, "budget.max_concurrency")
    assert started <= 3


async def test_max_wall_seconds_stops_a_sleeping_run(evidence: Path, key: SigningKey) -> None:
    woke = False

    @agent(name="sleeper")
    async def sleeper(ctx: Context) -> None:
        nonlocal woke
        await anyio.sleep(30)
        woke = True

    async with _runtime(
        evidence, key, "[budgets]\nmax_wall_seconds = 0.2\n", watchdog_interval=0.02
    ) as rt:
        handle = await rt.start(sleeper, principal="alice", ttl=30)
        exc = await _stopped(handle, key, "budget.max_wall_seconds")
    assert woke is False
    assert "max_wall_seconds=0.2" in str(exc)


async def test_max_tokens_stops_the_run_through_record_usage(
    evidence: Path, key: SigningKey
) -> None:
    calls: list[int] = []

    @agent(name="llm")
    async def llm(ctx: Context) -> None:
        for _ in range(10):
            ctx.record_usage(tokens=400)
            calls.append(1)
            await anyio.lowlevel.checkpoint()

    async with _runtime(evidence, key, "[budgets]\nmax_tokens = 1000\n") as rt:
        handle = await rt.start(llm, principal="alice")
        exc = await _stopped(handle, key, "budget.max_tokens")
    assert len(calls) == 2  # 400, 800, then 1200 > 1000 is refused
    assert "used 1200" in str(exc)
    usage = [r for r in _records(handle.evidence_path) if r["kind"] == "usage"]
    assert [u["tokens"] for u in usage] == [400, 400, 400]


async def test_max_cost_stops_the_run_through_record_usage(evidence: Path, key: SigningKey) -> None:
    after: list[str] = []

    @agent(name="spender")
    async def spender(ctx: Context) -> None:
        ctx.record_usage(cost=0.75)
        try:
            ctx.record_usage(cost=0.5)
        except PolicyDenied:
            after.append("caught")
        await anyio.lowlevel.checkpoint()
        after.append("resumed")

    async with _runtime(evidence, key, "[budgets]\nmax_cost = 1.0\n") as rt:
        handle = await rt.start(spender, principal="alice")
        await _stopped(handle, key, "budget.max_cost")
    assert after == ["caught"]
    usage = [r for r in _records(handle.evidence_path) if r["kind"] == "usage"]
    assert [u["cost_micros"] for u in usage] == [750000, 500000]


async def test_rate_limit_stops_the_run_on_the_third_quick_call(
    evidence: Path, key: SigningKey
) -> None:
    c = _Counter()
    async with _runtime(evidence, key, '[rate_limits]\nping = "2/s"\n') as rt:
        handle = await rt.start(c.pinger, 3, principal="alice")
        exc = await _stopped(handle, key, "ratelimit.ping")
    assert c.ran == 2
    assert "2/s" in str(exc)


async def test_rate_limit_glob_key_names_the_key_in_the_check(
    evidence: Path, key: SigningKey
) -> None:
    c = _Counter()
    async with _runtime(evidence, key, '[rate_limits]\n"p?ng" = "1/m"\n') as rt:
        handle = await rt.start(c.pinger, 2, principal="alice")
        await _stopped(handle, key, "ratelimit.p?ng")
    assert c.ran == 1


async def test_a_run_within_its_budgets_finishes_normally(evidence: Path, key: SigningKey) -> None:
    c = _Counter()
    extra = """
[budgets]
max_steps = 10
max_tool_calls = 5
max_depth = 1
max_concurrency = 2
max_wall_seconds = 60
max_tokens = 10
max_cost = 1.0

[rate_limits]
ping = "5/s"
"""
    async with _runtime(evidence, key, extra) as rt:
        handle = await rt.start(c.pinger, 5, principal="alice")
        assert await handle.result() is None
    assert c.ran == 5
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_budgets_are_per_run_a_new_run_starts_from_zero(
    evidence: Path, key: SigningKey
) -> None:
    c = _Counter()
    async with _runtime(evidence, key, "[budgets]\nmax_tool_calls = 3\n") as rt:
        await rt.run(c.pinger, 3, principal="alice")
        await rt.run(c.pinger, 3, principal="alice")
    assert c.ran == 6

"""Revocation, expiry and uncooperative code: the run stops within one await."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tenure import (
    Context,
    GovernanceUnavailable,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.policies import PolicySet


def _runtime(policy: PolicySet, evidence: Path, **kw: Any) -> Runtime:
    return Runtime(policies=policy, evidence_dir=evidence, key=SigningKey.generate(), **kw)


def _ledger_kinds(run_dir: Path) -> list[str]:
    import json

    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line)["kind"] for line in lines]


async def test_revoking_a_run_of_100_parallel_agents_stops_every_agent(
    allow_all: PolicySet, evidence: Path
) -> None:
    """No agent body executes a step after ``rt.revoke`` returns."""
    steps_after_revoke: list[int] = []
    started = 0
    all_started = anyio.Event()
    revoked = False

    @agent(scopes={"work"})
    async def worker(ctx: Context, n: int) -> None:
        nonlocal started
        started += 1
        if started == 100:
            all_started.set()
        while True:
            await anyio.sleep(0.001)
            if revoked:
                steps_after_revoke.append(n)

    @agent(scopes={"work"})
    async def boss(ctx: Context) -> None:
        async with ctx.parallel() as p:
            for i in range(100):
                p.start(worker, i)

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(boss, principal="alice", scopes={"work"}, ttl=30)
        await all_started.wait()
        rt.revoke(handle.run_id, reason="kill switch")
        revoked = True
        with pytest.raises(LeaseRevoked) as info:
            await handle.result()
    assert steps_after_revoke == []
    assert info.value.run_id == handle.run_id
    assert info.value.check == "lease.revoked"
    assert "kill switch" in str(info.value)
    kinds = _ledger_kinds(handle.evidence_path)
    assert "lease.revoked" in kinds and "violation" in kinds and kinds[-2] == "run.end"
    # Every one of the 101 live agent steps is recorded as stopped, once, after the revocation.
    lines = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    revoked_at = next(r["t"] for r in recs if r["kind"] == "lease.revoked")
    [stopped] = [r for r in recs if r["kind"] == "steps.stopped"]
    started_ids = {r["step"] for r in recs if r["kind"] == "step.start"}
    assert sorted(stopped["steps"]) == sorted(started_ids) and len(started_ids) == 101
    assert stopped["error"] == "LeaseRevoked" and min(stopped["ended"]) >= revoked_at
    assert not [r for r in recs if r["kind"] == "step.end"]


async def test_revoke_is_synchronous_no_task_resumes_after_it_returns(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A task that becomes runnable in the same loop turn as the revocation never runs."""
    resumed_after = False
    ready = anyio.Event()
    go = anyio.Event()
    revoked = False

    @agent
    async def waiter(ctx: Context) -> None:
        nonlocal resumed_after
        ready.set()
        await go.wait()
        resumed_after = revoked

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(waiter, principal="alice", ttl=30)
        await ready.wait()
        go.set()  # the waiter is now runnable...
        rt.revoke(handle.run_id, reason="now")  # ...but the revocation lands first
        revoked = True
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert resumed_after is False


async def test_ttl_expiry_stops_a_long_agent_with_lease_expired(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The run's ttl is a hard limit: a sleeping agent is woken and stopped at it."""
    finished = False

    @agent
    async def slow(ctx: Context) -> None:
        nonlocal finished
        await anyio.sleep(30)
        finished = True

    async with _runtime(allow_all, evidence) as rt:
        with pytest.raises(LeaseExpired) as info:
            await rt.run(slow, principal="alice", ttl=0.3)
    assert not finished
    assert info.value.check == "run.ttl"


async def test_agent_swallowing_cancellation_in_a_loop_is_abandoned_after_the_grace(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Catching the violation and CancelledError and going on: it keeps only the cleanup
    grace, is then abandoned (never resumed again) and recorded as uncooperative."""
    ready = anyio.Event()
    iterations = 0

    @agent
    async def stubborn(ctx: Context) -> str:
        nonlocal iterations
        ready.set()
        while True:
            try:  # noqa: SIM105 - the attack under test: swallow everything
                await anyio.sleep(0.01)
            except BaseException:
                pass
            iterations += 1

    async with _runtime(allow_all, evidence, cleanup_grace=0.2) as rt:
        handle = await rt.start(stubborn, principal="alice", ttl=30)
        await ready.wait()
        rt.revoke(handle.run_id, reason="stop")
        with pytest.raises(LeaseRevoked):
            await handle.result()
        at_end = iterations
        # Absence of resumption is shown by letting the loop turn: the coroutine is entombed.
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.05)
    assert iterations == at_end
    lines = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    uncooperative = [r for r in records if r.get("check") == "task.uncooperative"]
    assert len(uncooperative) == 1
    assert "cleanup grace ended" in uncooperative[0]["reason"]
    ends = [r for r in records if r["kind"] == "steps.stopped"]
    assert [e["outcome"] for e in ends] == ["abandoned"]


async def test_agent_that_swallows_and_returns_has_its_result_discarded(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A value returned after the stop is never handed back as the run's result."""
    ready = anyio.Event()

    @agent
    async def liar(ctx: Context) -> str:
        ready.set()
        try:
            await anyio.sleep(30)
        except BaseException:  # the attack under test
            return "pretend all is well"
        return "unreachable"

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(liar, principal="alice", ttl=30)
        await ready.wait()
        rt.revoke(handle.run_id, reason="stop")
        with pytest.raises(LeaseRevoked):
            await handle.result()


async def test_tool_called_after_revocation_never_runs(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The tool body does not start once the run is revoked, even if the agent tries."""
    tool_ran = False
    ready = anyio.Event()

    @tool(scopes={"fs:write"})
    async def write_file() -> None:
        nonlocal tool_ran
        tool_ran = True

    @agent(scopes={"fs:write"})
    async def writer(ctx: Context) -> None:
        ready.set()
        try:
            await anyio.sleep(30)
        except BaseException:  # the attack: try the tool anyway
            await ctx.call(write_file)

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(writer, principal="alice", scopes={"fs:write"}, ttl=30)
        await ready.wait()
        rt.revoke(handle.run_id, reason="stop")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert tool_ran is False


async def test_revoking_a_child_lease_stops_the_whole_run(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Revoking one delegated lease cascades and fails the run closed."""
    child_lease: list[str] = []
    ready = anyio.Event()
    sibling_steps_after = 0
    revoked = False

    @agent(scopes={"w"})
    async def child(ctx: Context) -> None:
        child_lease.append(ctx.lease.id)
        ready.set()
        await anyio.sleep(30)

    @agent(scopes={"w"})
    async def sibling(ctx: Context) -> None:
        nonlocal sibling_steps_after
        while True:
            await anyio.sleep(0.001)
            if revoked:
                sibling_steps_after += 1

    @agent(scopes={"w"})
    async def parent(ctx: Context) -> None:
        async with ctx.parallel() as p:
            p.start(child)
            p.start(sibling)

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(parent, principal="alice", scopes={"w"}, ttl=30)
        await ready.wait()
        rt.revoke(child_lease[0], reason="compromised")
        revoked = True
        with pytest.raises(LeaseRevoked) as info:
            await handle.result()
    assert info.value.lease_id == child_lease[0]
    assert sibling_steps_after == 0


async def test_watchdog_crash_stops_the_run_with_governance_unavailable(
    allow_all: PolicySet, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead watchdog never means 'no more checks'."""
    from tenure.runtime.services import _watchdog

    ready = anyio.Event()

    @agent
    async def sleeper(ctx: Context) -> None:
        ready.set()
        await anyio.sleep(30)

    def boom(self: object) -> None:
        raise RuntimeError("injected watchdog fault")

    async with _runtime(allow_all, evidence, watchdog_interval=0.01) as rt:
        handle = await rt.start(sleeper, principal="alice", ttl=30)
        await ready.wait()
        monkeypatch.setattr(_watchdog.Watchdog, "tick", boom)
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert info.value.check == "watchdog.crashed"
    assert "injected watchdog fault" in str(info.value)


async def test_starved_watchdog_heartbeat_stops_work_at_the_next_await(
    allow_all: PolicySet, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late heartbeat (watchdog alive but not running) fails closed at the gate."""
    from tenure.runtime.services import _watchdog

    @agent
    async def busy(ctx: Context) -> None:
        for _ in range(10_000):
            await anyio.sleep(0.001)

    async def frozen(self: _watchdog.Watchdog) -> None:
        self._gov.watchdog_deadline = 0.0  # one beat, long ago; then silence
        await anyio.sleep_forever()

    monkeypatch.setattr(_watchdog.Watchdog, "run", frozen)
    async with _runtime(allow_all, evidence) as rt:
        with pytest.raises(GovernanceUnavailable) as info:
            await rt.run(busy, principal="alice", ttl=30)
    assert info.value.check == "watchdog.heartbeat"


async def test_blocking_sleep_inside_an_agent_is_reported_as_a_breach(
    allow_all: PolicySet, evidence: Path
) -> None:
    """time.sleep(2) blocks the loop past the stall bound: GovernanceUnavailable + record."""
    import time

    after_block_steps = 0

    @agent
    async def blocker(ctx: Context) -> None:
        nonlocal after_block_steps
        await anyio.lowlevel.checkpoint()
        time.sleep(2)  # noqa: ASYNC251 - the blocking call under test
        await anyio.lowlevel.checkpoint()
        after_block_steps += 1

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(blocker, principal="alice", ttl=30)
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert info.value.check == "loop.stall"
    assert after_block_steps == 0
    lines = (handle.evidence_path / "ledger.jsonl").read_text()
    assert '"kind":"stall"' in lines and "time.sleep(2)" in lines


async def test_scope_widening_delegation_is_refused_and_the_child_never_runs(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A delegate naming a scope its parent lacks is a violation, never a silent widening."""
    child_ran = False

    @agent(scopes={"read", "admin"})
    async def child(ctx: Context) -> None:
        nonlocal child_ran
        child_ran = True

    @agent(scopes={"read"})
    async def parent(ctx: Context) -> None:
        await ctx.delegate(child, scopes={"read", "admin"})

    async with _runtime(allow_all, evidence) as rt:
        with pytest.raises(PolicyDenied) as info:
            await rt.run(parent, principal="alice", scopes={"read"}, ttl=30)
    assert child_ran is False
    assert info.value.check == "lease.narrowing"
    assert "admin" in str(info.value)


async def test_delegated_lease_is_the_intersection_of_parent_and_agent_scopes(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A child gets parent ∩ declared scopes; a tool needing more is refused."""
    seen: list[frozenset[str]] = []
    tool_ran = False

    @tool(scopes={"pay"})
    async def pay() -> None:
        nonlocal tool_ran
        tool_ran = True

    @agent(scopes={"read"})
    async def child(ctx: Context) -> None:
        seen.append(ctx.lease.scopes)
        await ctx.call(pay)

    @agent(scopes={"read", "pay"})
    async def parent(ctx: Context) -> None:
        await ctx.delegate(child)

    async with _runtime(allow_all, evidence) as rt:
        with pytest.raises(PolicyDenied) as info:
            await rt.run(parent, principal="alice", scopes={"read", "pay"}, ttl=30)
    assert seen == [frozenset({"read"})]
    assert info.value.check == "scope.pay"
    assert tool_ran is False


async def test_the_stop_raised_by_many_tasks_does_not_keep_all_their_frames(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Every stopped task raises the run's one stop instance; its traceback must not chain
    the frames of all of them (200 tasks used to leave a 2,000-entry traceback holding every
    task's frames and locals alive for as long as the caller kept the exception)."""
    started = 0
    all_started = anyio.Event()

    @agent(scopes={"work"})
    async def sleeper(ctx: Context) -> None:
        nonlocal started
        started += 1
        if started == 200:
            all_started.set()
        await anyio.sleep(3600)

    @agent(scopes={"work"})
    async def boss(ctx: Context) -> None:
        async with ctx.parallel() as p:
            for _ in range(200):
                p.start(sleeper)

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(boss, principal="alice", scopes={"work"}, ttl=30)
        await all_started.wait()
        rt.revoke(handle.run_id, reason="kill switch")
        with pytest.raises(LeaseRevoked) as info:
            await handle.result()
    depth = 0
    tb = info.value.__traceback__
    while tb is not None:
        depth += 1
        tb = tb.tb_next
    assert depth < 20


async def test_a_revoked_fan_out_leaves_no_lease_bookkeeping_behind(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The leases of a stopped run's unwinding steps are all forgotten by its end: none
    of them (parents, children, the revoked root) stays in the runtime's authority;
    every step of the nested fan-outs and delegations is recorded as stopped."""
    started = 0
    all_started = anyio.Event()

    @agent(scopes={"work"})
    async def leaf(ctx: Context) -> None:
        nonlocal started
        started += 1
        if started == 20:
            all_started.set()
        await anyio.sleep(3600)

    @agent(scopes={"work"})
    async def fan(ctx: Context) -> None:
        async with ctx.parallel() as p:  # a fan-out nested in another one
            p.start(leaf)

    @agent(scopes={"work"})
    async def middle(ctx: Context) -> None:
        await ctx.delegate(fan)

    @agent(scopes={"work"})
    async def boss(ctx: Context) -> None:
        async with ctx.parallel() as p:
            for _ in range(10):
                p.start(middle)
                p.start(leaf)

    async with _runtime(allow_all, evidence) as rt:
        authority = rt._authority
        handle = await rt.start(boss, principal="alice", scopes={"work"}, ttl=30)
        await all_started.wait()
        assert authority._children  # the live fan-out's parents and their children
        rt.revoke(handle.run_id, reason="kill switch")
        with pytest.raises(LeaseRevoked):
            await handle.result()
        assert authority._children == {}
        assert authority._revoked == set()
        assert authority._signed_scopes == {}
    recs = [json.loads(x) for x in (handle.evidence_path / "ledger.jsonl").read_text().splitlines()]
    [stopped] = [r for r in recs if r["kind"] == "steps.stopped"]
    assert len(stopped["steps"]) == 1 + 10 + 10 + 20  # boss, the middles, the fans, the leaves
    assert stopped["outcome"] == "cleaned" and stopped["error"] == "LeaseRevoked"

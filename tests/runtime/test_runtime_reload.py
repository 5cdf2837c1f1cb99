"""Hot reload at the runtime: ``rt.reload_policies`` re-decides every live step at once.

A reload that denies live work stops it mid-flight (no further step of it executes, even
one that was runnable in the same loop turn); a reload that still allows it changes
nothing visible; an invalid file is refused with :class:`PolicyError` and, by default,
stops live work fail closed (``keep_last_good_policy=True`` keeps the previous set). The
evidence of every run verifies afterwards.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenure import (
    Context,
    GovernanceUnavailable,
    PolicyDenied,
    RunHandle,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.evidence import verify_run
from tenure.policies import PolicyError, PolicySet
from tests.support.evidence import renewed_leases

HEAD = 'version = 1\ndefault = "deny"\n'

ALLOW_ALL = (
    HEAD
    + """
[[rules]]
id = "allow-all"
effect = "allow"
"""
)

DENY_WORKER = (
    ALLOW_ALL
    + """
[[rules]]
id = "stop-worker"
effect = "deny"
targets = ["worker"]
"""
)

DENY_SLOW_TOOL = (
    ALLOW_ALL
    + """
[[rules]]
id = "stop-slow-tool"
effect = "deny"
actions = ["execute_tool"]
targets = ["slow_tool"]
"""
)

ONLY_BOSS = (
    HEAD
    + """
[[rules]]
id = "boss-only"
effect = "allow"
actions = ["invoke_agent"]
targets = ["boss"]
"""
)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def _verified(handle: RunHandle, key: SigningKey) -> list[dict[str, Any]]:
    rep = verify_run(handle.evidence_path, key.public_key)
    assert rep.ok, rep.failure_line()
    return _records(handle.evidence_path)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _runtime(evidence: Path, key: SigningKey, policies: Path | PolicySet, **kw: Any) -> Runtime:
    return Runtime(policies=policies, evidence_dir=evidence, key=key, **kw)


class _Looper:
    """An agent that counts its steps in a governed loop until told to stop."""

    def __init__(self) -> None:
        self.steps = 0
        self.running = anyio.Event()
        self.finish = anyio.Event()
        self.steps_after_reload = 0
        self.reloaded = False

        @agent(name="worker")
        async def worker(ctx: Context) -> str:
            while not self.finish.is_set():
                self.steps += 1
                if self.reloaded:
                    self.steps_after_reload += 1
                self.running.set()
                await anyio.sleep(0.001)
            return "finished"

        self.worker = worker


async def test_reload_that_denies_a_running_agent_stops_it_mid_flight(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    first = _write(tmp_path, "allow.toml", ALLOW_ALL)
    second = _write(tmp_path, "deny.toml", DENY_WORKER)
    async with _runtime(evidence, key, first) as rt:
        handle = await rt.start(looper.worker, principal="alice", ttl=30)
        await looper.running.wait()
        rt.reload_policies(second)
        looper.reloaded = True
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert looper.steps_after_reload == 0
    exc = info.value
    assert (exc.check, exc.source, exc.task) == (
        "rule:stop-worker",
        "policy-reload",
        "agent:worker",
    )
    assert exc.run_id == handle.run_id
    recs = _verified(handle, key)
    [violation] = [r for r in recs if r["kind"] == "violation"]
    assert (violation["check"], violation["source"]) == ("rule:stop-worker", "policy-reload")
    reloads = [r for r in recs if r["kind"] == "policy.reloaded"]
    assert [r["policy"] for r in reloads] == [PolicySet.load(second).digest]
    assert reloads[0]["i"] < violation["i"]


async def test_reload_wakes_a_sleeping_agent_and_stops_it(evidence: Path, key: SigningKey) -> None:
    woke = False
    asleep = anyio.Event()

    @agent(name="worker")
    async def worker(ctx: Context) -> None:
        nonlocal woke
        asleep.set()
        await anyio.sleep(30)
        woke = True

    async with _runtime(evidence, key, PolicySet.from_text(ALLOW_ALL)) as rt:
        handle = await rt.start(worker, principal="alice", ttl=60)
        await asleep.wait()
        rt.reload_policies(PolicySet.from_text(DENY_WORKER))
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert woke is False
    assert info.value.source == "policy-reload"
    _verified(handle, key)


async def test_reload_that_denies_a_child_agent_stops_the_whole_run(
    evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    boss_after: list[str] = []

    @agent(name="boss")
    async def boss(ctx: Context) -> None:
        try:
            await ctx.delegate(looper.worker)
        finally:
            boss_after.append("unwound")
        boss_after.append("went on")

    async with _runtime(evidence, key, PolicySet.from_text(ALLOW_ALL)) as rt:
        handle = await rt.start(boss, principal="alice", ttl=30)
        await looper.running.wait()
        rt.reload_policies(PolicySet.from_text(ONLY_BOSS))
        looper.reloaded = True
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert looper.steps_after_reload == 0
    assert boss_after == ["unwound"]
    assert info.value.check == "rule:default-deny"
    _verified(handle, key)


async def test_reload_that_denies_a_running_tool_stops_it_before_its_next_await(
    evidence: Path, key: SigningKey
) -> None:
    inside = anyio.Event()
    tool_went_on = False

    @tool(name="slow_tool")
    async def slow_tool() -> None:
        nonlocal tool_went_on
        inside.set()
        await anyio.sleep(30)
        tool_went_on = True

    @agent(name="boss")
    async def boss(ctx: Context) -> None:
        await ctx.call(slow_tool)

    async with _runtime(evidence, key, PolicySet.from_text(ALLOW_ALL)) as rt:
        handle = await rt.start(boss, principal="alice", ttl=60)
        await inside.wait()
        rt.reload_policies(PolicySet.from_text(DENY_SLOW_TOOL))
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert tool_went_on is False
    assert (info.value.check, info.value.task) == ("rule:stop-slow-tool", "tool:slow_tool")
    recs = _verified(handle, key)
    assert not [r for r in recs if r["kind"] == "step.end" and r["step"] == "2"]
    [stopped] = [r for r in recs if r["kind"] == "steps.stopped" and "2" in r["steps"]]
    assert stopped["error"] == "PolicyDenied"


async def test_reload_that_still_allows_everything_lets_the_run_finish(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    first = _write(tmp_path, "a.toml", ALLOW_ALL)
    second = _write(tmp_path, "b.toml", ALLOW_ALL + "\n[budgets]\nmax_steps = 1000\n")
    async with _runtime(evidence, key, first) as rt:
        handle = await rt.start(looper.worker, principal="alice", ttl=30)
        await looper.running.wait()
        rt.reload_policies(second)
        looper.reloaded = True
        # The reloaded set is now the attested one: re-measuring is not a change.
        rt.check_attestation()
        looper.finish.set()
        assert await handle.result() == "finished"
    recs = _verified(handle, key)
    assert [r for r in recs if r["kind"] == "violation"] == []
    assert recs[-2]["kind"] == "run.end" and recs[-2]["status"] == "ok"


async def test_renewals_after_a_reload_carry_the_new_policy_digest(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    second = _write(tmp_path, "b.toml", ALLOW_ALL + "\n[budgets]\nmax_steps = 1000\n")
    new_digest = PolicySet.load(second).digest
    async with _runtime(
        evidence,
        key,
        PolicySet.from_text(ALLOW_ALL),
        lease_seconds=0.5,
        watchdog_interval=0.02,
        attest_interval=0.02,
    ) as rt:
        handle = await rt.start(looper.worker, principal="alice", ttl=30)
        await looper.running.wait()
        rt.reload_policies(second)
        with anyio.fail_after(10):
            while True:
                if handle.done or len(renewed_leases(_records(handle.evidence_path))) >= 2:
                    break
                await anyio.sleep(0.02)
        looper.finish.set()
        assert await handle.result() == "finished"
    recs = _verified(handle, key)
    renewed = renewed_leases(recs)
    assert len(renewed) >= 2
    assert renewed[-1]["policy"] == new_digest


async def test_invalid_reload_is_refused_and_stops_running_work_by_default(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    good = _write(tmp_path, "good.toml", ALLOW_ALL)
    bad = _write(tmp_path, "bad.toml", ALLOW_ALL + 'typo_key = "x"\n')
    async with _runtime(evidence, key, good) as rt:
        handle = await rt.start(looper.worker, principal="alice", ttl=30)
        await looper.running.wait()
        with pytest.raises(PolicyError) as perr:
            rt.reload_policies(bad)
        looper.reloaded = True
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()

        # The refused file never took effect: a new run still works under the good set.
        @agent(name="after")
        async def after(ctx: Context) -> str:
            return "ok"

        assert await rt.run(after, principal="alice") == "ok"
    assert "bad.toml" in str(perr.value)
    assert looper.steps_after_reload == 0
    assert (info.value.check, info.value.source) == ("policy.reload", "policy-reload")
    assert "bad.toml" in str(info.value)
    recs = _verified(handle, key)
    assert [r for r in recs if r["kind"] == "policy.reloaded"] == []


async def test_invalid_reload_with_keep_last_good_policy_lets_the_run_go_on(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    denied: list[str] = []

    @tool(name="forbidden")
    async def forbidden() -> None:
        raise AssertionError("the old set denies this tool; it must not run")

    @agent(name="boss")
    async def boss(ctx: Context) -> str:
        out: str = await ctx.delegate(looper.worker)
        try:
            await ctx.call(forbidden)
        except PolicyDenied as exc:
            denied.append(exc.check or "")
        return out

    good = _write(
        tmp_path,
        "good.toml",
        HEAD
        + """
[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]
""",
    )
    bad = _write(tmp_path, "bad.toml", "version = 1\n[[rules]]\nid = 'x'\neffect = 'alow'\n")
    async with _runtime(evidence, key, good, keep_last_good_policy=True) as rt:
        handle = await rt.start(boss, principal="alice", ttl=30)
        await looper.running.wait()
        with pytest.raises(PolicyError):
            rt.reload_policies(bad)
        looper.reloaded = True
        rt.check_attestation()  # the old set's files are unchanged: not a change
        looper.running = anyio.Event()
        await looper.running.wait()  # the worker takes another step under the old set
        looper.finish.set()
        assert await handle.result() == "finished"
    assert looper.steps_after_reload >= 1
    assert denied == ["rule:default-deny"]
    recs = _verified(handle, key)
    assert [r for r in recs if r["kind"] == "violation"] == []


async def test_reload_with_a_missing_file_is_a_policy_error_and_fails_closed(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    async with _runtime(evidence, key, PolicySet.from_text(ALLOW_ALL)) as rt:
        handle = await rt.start(looper.worker, principal="alice", ttl=30)
        await looper.running.wait()
        with pytest.raises(PolicyError):
            rt.reload_policies(tmp_path / "nope.toml")
        with pytest.raises(GovernanceUnavailable):
            await handle.result()
    _verified(handle, key)


async def test_runs_started_after_a_reload_record_and_use_the_new_set(
    tmp_path: Path, evidence: Path, key: SigningKey
) -> None:
    @agent(name="worker")
    async def worker(ctx: Context) -> str:
        return "done"

    second = _write(tmp_path, "deny.toml", DENY_WORKER)
    async with _runtime(evidence, key, PolicySet.from_text(ALLOW_ALL)) as rt:
        first = await rt.start(worker, principal="alice")
        assert await first.result() == "done"
        rt.reload_policies(second)
        later = await rt.start(worker, principal="alice")
        with pytest.raises(PolicyDenied) as info:
            await later.result()
    assert info.value.check == "rule:stop-worker"
    start = _verified(later, key)[0]
    assert start["kind"] == "run.start" and start["policy"] == PolicySet.load(second).digest
    _verified(first, key)


async def test_reload_that_tightens_a_budget_applies_to_live_runs(
    evidence: Path, key: SigningKey
) -> None:
    looper = _Looper()
    async with _runtime(
        evidence, key, PolicySet.from_text(ALLOW_ALL), watchdog_interval=0.02
    ) as rt:
        handle = await rt.start(looper.worker, principal="alice", ttl=5)
        await looper.running.wait()
        rt.reload_policies(
            PolicySet.from_text(ALLOW_ALL + "\n[budgets]\nmax_wall_seconds = 0.001\n")
        )
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert info.value.check == "budget.max_wall_seconds"
    _verified(handle, key)


def _big_policy(n: int) -> str:
    """``n`` rules (exact targets, globs, conditions), the last of which denies ``probe``."""
    out = ["version = 1"]
    for i in range(n):
        out += ["[[rules]]", f'id = "r{i}"', 'effect = "allow"', f'targets = ["t{i}", "g{i}*"]']
        if i % 5 == 0:
            out.append(f'when = {{ "args.x" = {{ lt = {i} }} }}')
    out += ["[[rules]]", 'id = "probe-denied"', 'effect = "deny"', 'targets = ["probe"]']
    out += ["[[rules]]", 'id = "agents"', 'effect = "allow"', 'actions = ["invoke_agent"]']
    return "\n".join(out) + "\n"


class _HeldLoad:
    """``PolicySet.load`` held in its thread until released: shows where and when it runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loading, self.release = threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []
        self._real = PolicySet.load.__func__  # type: ignore[attr-defined]
        self._monkeypatch = monkeypatch

    def install(self) -> None:
        self._monkeypatch.setattr(PolicySet, "load", classmethod(self._load))

    def _load(self, cls: type[PolicySet], p: Any) -> PolicySet:
        self.threads.append(threading.current_thread())
        self.loading.set()
        self.release.wait(30)
        result: PolicySet = self._real(cls, p)
        return result


class _Busy:
    """An agent calling ``probe`` in a loop; :meth:`goes_on` waits for five more calls."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self._goal: list[int] = []
        self._progressed = anyio.Event()

        @tool
        async def probe(i: int) -> int:
            if self._goal and len(self.steps) >= self._goal[0]:
                self._progressed.set()
            return i

        @agent
        async def busy(ctx: Context) -> None:
            i = 0
            while True:
                self.steps.append(await ctx.call(probe, i))
                i += 1
                await anyio.sleep(0.001)

        self.agent = busy

    async def goes_on(self) -> None:
        self._goal.append(len(self.steps) + 5)
        with anyio.fail_after(10):
            await self._progressed.wait()


async def test_a_5000_rule_reload_is_parsed_off_the_loop_and_swapped_in_one_step(
    evidence: Path, key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the big set is parsed and compiled (in a worker thread, held there until the
    test has seen the loop go on), a live run keeps taking steps under the old set; after
    the swap the new set decides, and the live run is re-decided under it."""
    path = tmp_path / "big.toml"
    path.write_text(_big_policy(5000))
    held, busy = _HeldLoad(monkeypatch), _Busy()
    held.install()
    old = PolicySet.from_text('version = 1\n[[rules]]\nid = "all"\neffect = "allow"\n')
    async with Runtime(policies=old, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(busy.agent, principal="alice", ttl=60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.reload_policies_async, path)
            await anyio.to_thread.run_sync(held.loading.wait, 10)
            await busy.goes_on()  # the loop and the run go on meanwhile
            assert rt._gov.policy is old  # nothing swapped yet
            held.release.set()
        assert held.threads and held.threads[0] is not threading.main_thread()
        assert len(rt._gov.policy.rules) == 5002
        with pytest.raises(PolicyDenied) as stop:
            await handle.result()  # the live run's next probe is denied by the new set
    assert stop.value.check == "rule:probe-denied"


async def test_a_watched_5000_rule_file_is_parsed_off_the_loop_while_runs_go_on(
    evidence: Path, key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watch_policies: the watchdog reloads a changed file through the off-loop path. The
    parse is held in its worker thread until the test has seen the live run take steps
    (and the watchdog keep beating: the run is not stopped for a dead watchdog); after
    the swap the new set decides the live run's next step."""
    path = tmp_path / "watched.toml"
    path.write_text(ALLOW_ALL)
    held, busy = _HeldLoad(monkeypatch), _Busy()

    async with Runtime(policies=path, evidence_dir=evidence, key=key, watch_policies=True) as rt:
        old = rt._gov.policy
        handle = await rt.start(busy.agent, principal="alice", ttl=60)
        held.install()
        path.write_text(_big_policy(5000))
        await anyio.to_thread.run_sync(held.loading.wait, 10)
        await busy.goes_on()  # the loop, the watchdog and the run go on meanwhile
        assert rt._gov.policy is old
        held.release.set()
        with pytest.raises(PolicyDenied) as stop:
            await handle.result()  # the live run's next probe is denied by the new set
    assert held.threads and held.threads[0] is not threading.main_thread()
    assert stop.value.check == "rule:probe-denied"
    kinds = [r["kind"] for r in _records(handle.evidence_path)]
    assert "policy.reloaded" in kinds
    assert "loop.stall" not in kinds

"""An approval left unanswered past its timeout, and the caller of rt.run going away."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tenure import Context, PolicyDenied, SigningKey, agent, tool
from tenure.policies import PolicySet
from tests.faults.conftest import (
    ALLOW_ALL_TOML,
    SCOPES,
    Workflow,
    assert_evidence,
    records,
    runtime,
)

APPROVE_TRANSFERS = (
    ALLOW_ALL_TOML
    + """
[[rules]]
id = "transfers-need-a-person"
effect = "require_approval"
targets = ["transfer"]
"""
)


async def test_unanswered_approval_times_out_as_a_denial(wf: Workflow, evidence: Path) -> None:
    """approval_timeout: nobody answered, the step never ran, approval.denied recorded."""
    wf.after_tool = wf.transfer
    key = SigningKey.generate()
    policy = PolicySet.from_text(APPROVE_TRANSFERS)
    async with runtime(evidence, key=key, policies=policy, approval_timeout=0.2) as rt:
        handle = await wf.start(rt)
        wf.go.set()
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
        assert rt.pending_approvals() == []
    assert info.value.check == "approval.timeout"
    assert wf.after == [] and wf.after_stop == []
    recs = records(handle.evidence_path)
    denied = [r for r in recs if r["kind"] == "approval.denied"]
    assert denied and denied[0]["approver"] == "timeout"
    assert not any(r["kind"] == "step.start" and r["target"] == "transfer" for r in recs)
    end = next(r for r in recs if r["kind"] == "run.end")
    assert (end["status"], end["check"]) == ("violation", "approval.timeout")
    rep = assert_evidence(handle.evidence_path, key, check=None)
    assert rep.run_status == "violation"


async def test_cancelling_the_caller_of_rt_run_stops_and_records_the_run(
    wf: Workflow, evidence: Path
) -> None:
    """A cancel scope around rt.run: the run stops, run.end says cancelled, it verifies."""
    key = SigningKey.generate()
    caller = anyio.CancelScope()
    async with runtime(evidence, key=key) as rt:

        async def call() -> None:
            with caller:
                await rt.run(wf.coordinator, principal="alice", scopes=SCOPES, ttl=30)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await wf.ready.wait()
            wf.run = next(iter(rt._runs.values()))
            caller.cancel()
            wf.go.set()
        assert rt._runs == {}  # rt.run returned only after the run had ended
    assert caller.cancelled_caught
    assert wf.run is not None and wf.run.cancelled_reason == "cancelled by its caller"
    assert wf.after == [] and wf.after_stop == []
    run_dir = wf.run.ledger.path.parent
    assert_evidence(run_dir, key, check=None, status="cancelled")


async def test_agent_swallowing_the_callers_cancellation_cannot_start_a_tool(
    evidence: Path,
) -> None:
    """After the caller went away no new step starts, even from uncooperative code."""
    ran: list[str] = []
    ready = anyio.Event()

    @tool(scopes={"act"})
    async def side_effect() -> None:
        ran.append("side effect")

    @agent(scopes={"act"})
    async def stubborn(ctx: Context) -> None:
        ready.set()
        try:  # noqa: SIM105 - the attack under test: swallow the cancellation, go on
            await anyio.sleep_forever()
        except BaseException:
            pass
        await ctx.call(side_effect)

    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await rt.start(stubborn, principal="alice", scopes=SCOPES, ttl=30)
        await ready.wait()
        handle.cancel()
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await handle.result()
    assert ran == []
    assert_evidence(handle.evidence_path, key, check=None, status="cancelled")

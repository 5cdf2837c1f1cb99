"""The backend contract, proved against the in-process backend and PostgreSQL alike."""

from __future__ import annotations

import anyio
import pytest

from tenure import GovernanceUnavailable
from tenure.runtime.backends import (
    ApprovalRecord,
    Backend,
    Batch,
    Debit,
    Member,
    RateWindow,
    SegmentInfo,
)

TTL = 0.4


async def _lapse(backend: Backend, member: Member) -> None:
    """Wait (bounded) until a reaper declares ``member`` lost."""
    with anyio.fail_after(10):
        while True:
            if any(m.id == member.id for m in await backend.liveness.reap()):
                return
            await anyio.sleep(TTL / 4)


def _approval(request_id: str = "apr_1") -> ApprovalRecord:
    return ApprovalRecord(
        id=request_id,
        run_id="run_a",
        principal="alice",
        action="execute_tool",
        target="pay",
        rule_id="pay-needs-approval",
        step="3",
        args_digest="sha256:00",
        requested_at_us=1,
    )


async def test_log_revisions_are_gapless_and_each_event_is_read_once_in_order(
    backend: Backend,
) -> None:
    revisions = [
        await backend.log.append("revoke", {"target": f"run_{i}", "reason": "r", "by": "t"})
        for i in range(5)
    ]
    assert revisions == [1, 2, 3, 4, 5]
    assert await backend.log.head() == 5
    events = await backend.log.read(2)
    assert [e.revision for e in events] == [3, 4, 5]
    assert [e.data["target"] for e in events] == ["run_2", "run_3", "run_4"]
    assert [e.revision for e in await backend.log.read(1, upto=3)] == [2, 3]


async def test_log_refuses_an_event_kind_it_does_not_hold(backend: Backend) -> None:
    with pytest.raises(ValueError, match="'grant' is not one of"):
        await backend.log.append("grant", {"target": "run_x"})
    assert await backend.log.head() == 0


async def test_log_wait_wakes_when_an_event_is_appended(backend: Backend) -> None:
    woke = anyio.Event()

    async def waiter() -> None:
        await backend.log.wait(0, 30)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        await backend.log.append("revoke", {"target": "run_1", "reason": "r", "by": "t"})
        with anyio.fail_after(5):
            await woke.wait()


async def test_policy_sets_are_kept_by_digest(backend: Backend) -> None:
    docs = [{"name": "p.toml", "text": 'version = 1\ndefault = "deny"\n'}]
    await backend.policies.put_policy("sha256:aa", docs)
    await backend.policies.put_policy("sha256:aa", [{"name": "other", "text": ""}])
    assert await backend.policies.get_policy("sha256:aa") == docs
    assert await backend.policies.get_policy("sha256:bb") is None


async def test_renewal_answers_the_log_head(backend: Backend) -> None:
    member = await backend.liveness.register("w1", "pool-a", 30, {})
    await backend.log.append("revoke", {"target": "run_1", "reason": "r", "by": "t"})
    assert await backend.liveness.renew(member) == 1


async def test_a_lapsed_member_cannot_renew_and_is_reaped_once(backend: Backend) -> None:
    member = await backend.liveness.register("w1", "pool-a", TTL, {})
    await _lapse(backend, member)
    with pytest.raises(GovernanceUnavailable) as caught:
        await backend.liveness.renew(member)
    assert caught.value.check == "worker.lost"
    assert await backend.liveness.reap() == []
    lost = [e for e in await backend.log.read(0) if e.kind == "worker.lost"]
    assert len(lost) == 1
    assert lost[0].data["member"] == member.id
    assert lost[0].data["generation"] == member.generation


async def test_rejoining_gives_a_new_generation_and_the_old_one_stays_fenced(
    backend: Backend,
) -> None:
    old = await backend.liveness.register("w1", "pool-a", TTL, {})
    await _lapse(backend, old)
    new = await backend.liveness.register("w1", "pool-a", 30, {})
    assert new.id == old.id and new.generation > old.generation
    with pytest.raises(GovernanceUnavailable) as caught:
        await backend.queue.enqueue(old, "pool-a", "run_a", {"agent": "x"})
    assert caught.value.check == "backend.fenced"
    await backend.queue.enqueue(new, "pool-a", "run_a", {"agent": "x"})


async def test_a_live_name_cannot_be_taken_by_a_second_process(backend: Backend) -> None:
    await backend.liveness.register("w1", "pool-a", 30, {})
    with pytest.raises(ValueError, match="'w1' is live already"):
        await backend.liveness.register("w1", "pool-a", 30, {})


async def test_every_write_of_a_reaped_member_is_refused_and_changes_nothing(
    backend: Backend,
) -> None:
    """The paused-worker attack at the storage level: writes after the reap never land."""
    ghost = await backend.liveness.register("ghost", "pool-a", TTL, {})
    alive = await backend.liveness.register("alive", "pool-a", 30, {})
    task_id = await backend.queue.enqueue(alive, "pool-a", "run_a", {"agent": "x"})
    claimed = await backend.queue.claim(ghost, "pool-a")
    assert claimed is not None and claimed.id == task_id
    segment = SegmentInfo("seg_ghost", "run_a", ghost.id)
    await backend.evidence.open_segment(ghost, segment)
    await _lapse(backend, ghost)
    debit = Debit("run_a", {"steps": 1}, {"steps": 10})
    writes = [
        backend.queue.enqueue(ghost, "pool-a", "run_a", {"agent": "y"}),
        backend.queue.claim(ghost, "pool-a"),
        backend.queue.finish(ghost, task_id, "done", result=1),
        backend.budgets.debit(ghost, debit),
        backend.approvals.request(ghost, _approval()),
        backend.evidence.commit(ghost, Batch("seg_ghost", 0, (b"{}\n",)), debit),
        backend.evidence.open_segment(ghost, SegmentInfo("seg_2", "run_a", ghost.id)),
    ]
    for write in writes:
        with pytest.raises(GovernanceUnavailable) as caught:
            await write
        assert caught.value.check == "backend.fenced"
    assert (await backend.queue.outcome(task_id)).state == "lost"
    assert await backend.budgets.used("run_a") == {}
    assert await backend.approvals.pending() == []
    assert await backend.evidence.records("seg_ghost") == ([], None)
    assert [s.id for s in await backend.evidence.segments("run_a")] == ["seg_ghost"]


async def test_an_approval_gets_exactly_one_decision(backend: Backend) -> None:
    member = await backend.liveness.register("w1", None, 30, {})
    await backend.approvals.request(member, _approval())
    assert [r.id for r in await backend.approvals.pending()] == ["apr_1"]
    first = await backend.approvals.decide("apr_1", "granted", approver="bob")
    second = await backend.approvals.decide("apr_1", "denied", approver="eve", reason="no")
    assert first is not None and first.decision == "granted" and first.approver == "bob"
    assert second is None
    stored = await backend.approvals.get("apr_1")
    assert stored is not None and stored.decision == "granted" and stored.approver == "bob"
    assert await backend.approvals.pending() == []
    decided = [e.data for e in await backend.log.read(0) if e.kind == "approval.decided"]
    assert decided == [{"request": "apr_1", "decision": "granted"}]
    assert await backend.approvals.decide("apr_nope", "granted", approver="bob") is None


async def test_a_reserve_debit_past_a_limit_is_refused_and_takes_nothing(
    backend: Backend,
) -> None:
    member = await backend.liveness.register("w1", None, 30, {})
    limits = {"steps": 3, "tool_calls": 2}
    for _ in range(2):
        assert (
            await backend.budgets.debit(
                member, Debit("run_a", {"steps": 1, "tool_calls": 1}, limits)
            )
            is None
        )
    refusal = await backend.budgets.debit(
        member, Debit("run_a", {"steps": 1, "tool_calls": 1}, limits)
    )
    assert refusal is not None and refusal.check == "budget.max_tool_calls"
    assert "max_tool_calls=2" in refusal.reason and "would be 3" in refusal.reason
    assert await backend.budgets.used("run_a") == {"steps": 2, "tool_calls": 2}
    assert await backend.budgets.debit(member, Debit("run_a", {"steps": 1}, limits)) is None


async def test_a_recorded_usage_counts_even_past_its_limit(backend: Backend) -> None:
    member = await backend.liveness.register("w1", None, 30, {})
    usage = Debit("run_a", {"tokens": 80}, {"tokens": 100}, mode="record")
    assert await backend.budgets.debit(member, usage) is None
    refusal = await backend.budgets.debit(member, usage)
    assert refusal is not None and refusal.check == "budget.max_tokens"
    assert (await backend.budgets.used("run_a"))["tokens"] == 160


async def test_a_rate_window_admits_count_calls_per_period(backend: Backend) -> None:
    member = await backend.liveness.register("w1", None, 30, {})
    window = Debit("run_a", {"steps": 1}, rates=(RateWindow("search", 2, 60.0),))
    assert await backend.budgets.debit(member, window) is None
    assert await backend.budgets.debit(member, window) is None
    refusal = await backend.budgets.debit(member, window)
    assert refusal is not None and refusal.check == "ratelimit.search"
    assert (await backend.budgets.used("run_a"))["steps"] == 2


async def test_a_task_is_claimed_once_and_finished_only_by_its_claimer(
    backend: Backend,
) -> None:
    a = await backend.liveness.register("a", "pool-a", 30, {})
    b = await backend.liveness.register("b", "pool-a", 30, {})
    task_id = await backend.queue.enqueue(a, "pool-a", "run_a", {"agent": "x", "args": [1]})
    assert await backend.queue.claim(a, "pool-b") is None
    claimed = await backend.queue.claim(b, "pool-a")
    assert claimed is not None and claimed.payload == {"agent": "x", "args": [1]}
    assert await backend.queue.claim(a, "pool-a") is None
    with pytest.raises(GovernanceUnavailable) as caught:
        await backend.queue.finish(a, task_id, "done", result="stolen")
    assert caught.value.check == "backend.fenced"
    await backend.queue.finish(b, task_id, "done", result={"answer": 42})
    outcome = await backend.queue.wait_outcome(task_id, 1)
    assert (outcome.state, outcome.result, outcome.claimer) == ("done", {"answer": 42}, b.id)


async def test_waiting_for_an_outcome_wakes_when_the_task_finishes(backend: Backend) -> None:
    a = await backend.liveness.register("a", "pool-a", 30, {})
    task_id = await backend.queue.enqueue(a, "pool-a", "run_a", {"agent": "x"})

    async def serve() -> None:
        await backend.queue.wait_queued("pool-a", 30)
        claimed = await backend.queue.claim(a, "pool-a")
        assert claimed is not None
        await backend.queue.finish(a, claimed.id, "failed", error={"type": "ValueError"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(5):
            outcome = await backend.queue.wait_outcome(task_id, 30)
    assert outcome.state == "failed" and outcome.error == {"type": "ValueError"}


async def test_a_segment_takes_batches_only_at_its_size(backend: Backend) -> None:
    member = await backend.liveness.register("w1", None, 30, {})
    await backend.evidence.open_segment(member, SegmentInfo("seg_1", "run_a", member.id))
    assert await backend.evidence.commit(member, Batch("seg_1", 0, (b"a\n", b"b\n"))) is None
    for first in (0, 1, 3):
        with pytest.raises(GovernanceUnavailable) as caught:
            await backend.evidence.commit(member, Batch("seg_1", first, (b"x\n",)))
        assert caught.value.check == "evidence.segment"
    await backend.evidence.commit(member, Batch("seg_1", 2, (b"c\n",), checkpoint="note 3"))
    assert await backend.evidence.records("seg_1") == ([b"a\n", b"b\n", b"c\n"], "note 3")
    assert await backend.evidence.size("seg_1") == 3


async def test_a_refused_debit_commits_the_refusal_record_instead_of_the_step(
    backend: Backend,
) -> None:
    member = await backend.liveness.register("w1", None, 30, {})
    await backend.evidence.open_segment(member, SegmentInfo("seg_1", "run_a", member.id))
    debit = Debit("run_a", {"steps": 1}, {"steps": 1})
    step = Batch("seg_1", 0, (b"step.start\n",), instead=(b"violation\n",))
    assert await backend.evidence.commit(member, step, debit) is None
    again = Batch("seg_1", 1, (b"step.start\n",), instead=(b"violation\n",))
    refusal = await backend.evidence.commit(member, again, debit)
    assert refusal is not None and refusal.check == "budget.max_steps"
    assert (await backend.evidence.records("seg_1"))[0] == [b"step.start\n", b"violation\n"]
    assert await backend.budgets.used("run_a") == {"steps": 1}


async def test_a_segment_is_written_only_by_the_member_that_opened_it(
    backend: Backend,
) -> None:
    a = await backend.liveness.register("a", None, 30, {})
    b = await backend.liveness.register("b", None, 30, {})
    await backend.evidence.open_segment(a, SegmentInfo("seg_a", "run_a", a.id))
    with pytest.raises(GovernanceUnavailable) as caught:
        await backend.evidence.commit(b, Batch("seg_a", 0, (b"forged\n",)))
    assert caught.value.check == "backend.fenced"
    assert await backend.evidence.records("seg_a") == ([], None)

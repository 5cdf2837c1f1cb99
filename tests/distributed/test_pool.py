"""Delegation to a pool of real worker processes: results, evidence segments, stops."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tenure import GovernanceUnavailable, LeaseRevoked, PolicyDenied, Runtime
from tenure.evidence import verify_run
from tenure.runtime.backends import Backend, SegmentInfo
from tenure.runtime.backends._pg import PgBackend, upgrade

from .conftest import WorkerProcess, export_and_verify, marked
from .pool_agents import budget_planner, delegates_lingerer, planner

ALLOW = """
version = 1
default = "deny"

[[rules]]
id = "allow-everything"
effect = "allow"
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "allow.toml"
    path.write_text(ALLOW)
    return path


def _records(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


async def _closed(backend: Backend, segments: list[SegmentInfo]) -> None:
    """Wait until every segment holds its run's end and final checkpoint (the workers'
    parts end on their own once the run stopped)."""
    with anyio.fail_after(30):
        for seg in segments:
            while True:  # other processes' commits: polled
                lines, _ = await backend.evidence.records(seg.id)
                kinds = [json.loads(line)["kind"] for line in lines[-2:]]
                if kinds == ["run.end", "checkpoint"]:
                    break
                await anyio.sleep(0.05)


async def test_a_planner_delegates_to_a_pool_of_two_workers_and_gets_every_result(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    await upgrade(pg_url)
    w1, w2 = workers(pg_url, "w1"), workers(pg_url, "w2")
    topics = [f"topic-{i}" for i in range(6)]
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(
            planner, topics, principal="alice", scopes={"notes:read", "delegate"}, ttl=60
        )
        with anyio.fail_after(60):
            result = await handle.result()
    assert result == [f"NOTES ON {t}".upper() for t in topics]
    root = _records(handle.evidence_path)
    queued = [r for r in root if r["kind"] == "delegation.queued"]
    returned = [r for r in root if r["kind"] == "delegation.returned"]
    assert len(queued) == len(returned) == 6
    assert {r["status"] for r in returned} == {"done"}
    assert verify_run(handle.evidence_path).verdict == "verified"
    backend = await PgBackend.connect(pg_url)
    try:
        segments = await backend.evidence.segments(handle.run_id)
        members = {s.member for s in segments[1:]}
        assert len(segments) == 7 and len(members) == 2  # both workers took part
        for seg, back in zip(
            sorted(segments[1:], key=lambda s: s.id),
            sorted(returned, key=lambda r: str(r["segment"])),
            strict=True,
        ):
            lines, note = await backend.evidence.records(seg.id)
            assert back["segment"] == seg.id and back["size"] == len(lines)
            assert back["checkpoint"] == note
            local = next(d for w in (w1, w2) if (d := w.evidence / seg.id).exists())
            assert (local / "ledger.jsonl").read_bytes() == b"".join(lines)
            witness = local.parent / ".witness" / seg.id
            seg_report = verify_run(local, expect_run_id=handle.run_id, witness_dir=witness)
            assert seg_report.verdict == "verified", seg_report.failures
            kinds = [r["kind"] for r in _records(local)[:3]]
            assert kinds == ["run.start", "attestation", "segment.start"]
    finally:
        await backend.close()


async def test_a_revoked_run_stops_its_delegated_step_on_the_worker(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    await upgrade(pg_url)
    worker = workers(pg_url, "w1")
    marker = tmp_path / "running"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(delegates_lingerer, str(marker), principal="alice", ttl=60)
        await marked(marker)
        rt.revoke(handle.run_id, reason="stop it everywhere")
        with anyio.fail_after(10), pytest.raises(LeaseRevoked):
            await handle.result()
        backend = rt._link.backend  # type: ignore[union-attr]
        segments = await backend.evidence.segments(handle.run_id)
        child = segments[1].id
        with anyio.fail_after(15):
            while True:  # the worker's last records arrive when its part has unwound
                lines, _ = await backend.evidence.records(child)
                if lines and json.loads(lines[-1])["kind"] == "checkpoint":
                    break
                await anyio.sleep(0.05)
    local = worker.evidence / child
    report = verify_run(local, expect_run_id=handle.run_id)
    assert report.verdict == "verified" and report.run_status == "violation"
    assert any(r["kind"] == "lease.revoked" for r in _records(local))


async def test_a_worker_killed_mid_step_is_lost_and_the_run_stops_fail_closed(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """Failure table: a worker SIGKILLed mid-step. Its step's outcome is unknown in the
    evidence (``delegation.lost``, with the durable prefix) and the run stops with
    ``worker.lost``; nothing is run again."""
    await upgrade(pg_url)
    worker = workers(pg_url, "w1")
    marker = tmp_path / "running"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(delegates_lingerer, str(marker), principal="alice", ttl=60)
        await marked(marker)
        worker.proc.kill()
        worker.proc.wait()
        with anyio.fail_after(20), pytest.raises(GovernanceUnavailable) as caught:
            await handle.result()
        backend = rt._link.backend  # type: ignore[union-attr]
        segments = await backend.evidence.segments(handle.run_id)
        lines, _ = await backend.evidence.records(segments[1].id)
    assert caught.value.check == "worker.lost"
    root = _records(handle.evidence_path)
    lost = [r for r in root if r["kind"] == "delegation.lost"]
    assert len(lost) == 1 and lost[0]["size"] == len(lines) > 0
    assert not any(r["kind"] == "delegation.returned" for r in root)
    starts = [json.loads(line) for line in lines if json.loads(line)["kind"] == "step.start"]
    assert len(starts) == 2  # the agent and its mark call: each durable before it ran
    report = verify_run(handle.evidence_path)
    assert report.verdict == "verified" and report.run_status == "violation"
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: verified (2 segments)" in verify.stdout
    assert f"segment {handle.run_id}: verified" in verify.stdout  # ended violation
    assert "its worker was lost (outcome unknown)" in " ".join(verify.stderr.split())


BUDGET = """
version = 1
default = "deny"

[[rules]]
id = "allow-everything"
effect = "allow"

[budgets]
max_tool_calls = 1000
"""


async def test_four_workers_on_one_1000_call_budget_are_granted_exactly_1000(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """A $100 cap on 5 replicas is not a $500 cap: four workers each call a tool until the
    run's shared budget refuses; exactly 1,000 calls are granted across them."""
    await upgrade(pg_url)
    policy = tmp_path / "budget.toml"
    policy.write_text(BUDGET)
    pool = [workers(pg_url, f"w{i}", concurrency=1) for i in range(4)]
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(
            budget_planner, 4, principal="alice", scopes={"notes:read"}, ttl=120
        )
        with anyio.fail_after(90), pytest.raises(PolicyDenied) as caught:
            await handle.result()
        backend = rt._link.backend  # type: ignore[union-attr]
        used = await backend.budgets.used(handle.run_id)
        segments = await backend.evidence.segments(handle.run_id)
        await _closed(backend, segments)
        tool_starts = 0
        for seg in segments:
            lines, _ = await backend.evidence.records(seg.id)
            tool_starts += sum(
                1
                for r in map(json.loads, lines)
                if r["kind"] == "step.start" and r["action"] == "execute_tool"
            )
    assert caught.value.check == "budget.max_tool_calls"
    assert used["tool_calls"] == 1000
    assert tool_starts == 1000  # each start committed with its debit, and only those
    assert len({s.member for s in segments[1:]}) == 4  # every worker spent from one budget
    assert verify_run(handle.evidence_path).verdict == "verified"
    for worker in pool:
        for part in worker.evidence.glob("run_*"):
            report = verify_run(
                part,
                expect_run_id=handle.run_id,
                witness_dir=worker.evidence / ".witness" / part.name,
            )
            assert report.verdict == "verified", report.failures
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: verified (5 segments)" in verify.stdout
    assert verify.stdout.count(": verified, ") == 5  # every part, each ended by the stop


async def test_a_paused_worker_resumed_after_its_reap_gets_none_of_its_writes_accepted(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """Failure table: a worker SIGSTOPped past its lease, then resumed. The reaper declared
    it lost (its parent stopped with ``worker.lost``); after SIGCONT it stops its part on
    its own clock, and not one of its writes lands: its segment and its task stay as the
    reap left them; it rejoins only under a new generation."""
    await upgrade(pg_url)
    worker = workers(pg_url, "w1")
    marker = tmp_path / "running"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(delegates_lingerer, str(marker), principal="alice", ttl=60)
        await marked(marker)
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            with anyio.fail_after(20), pytest.raises(GovernanceUnavailable) as caught:
                await handle.result()
            assert caught.value.check == "worker.lost"
            child = (await backend.evidence.segments(handle.run_id))[1].id
            reaped_size = await backend.evidence.size(child)
            before = await backend.db.fetchrow(
                "SELECT generation, state FROM tenure_members WHERE name = 'w1'"
            )
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        with anyio.fail_after(20):
            while True:  # it rejoins on its own timer, under a new generation
                row = await backend.db.fetchrow(
                    "SELECT generation, state FROM tenure_members WHERE name = 'w1'"
                )
                if row is not None and row["state"] == "live":
                    break
                await anyio.sleep(0.1)
        assert before is not None and before["state"] == "lost"
        assert row["generation"] > before["generation"]
        assert await backend.evidence.size(child) == reaped_size
        task = await backend.db.fetchrow("SELECT state, result, error FROM tenure_tasks")
        assert task is not None
        assert (task["state"], task["result"], task["error"]) == ("lost", None, None)
    local = _records(worker.evidence / child)
    assert len(local) > reaped_size  # it recorded its own stop locally; none of it landed
    assert local[-1]["kind"] == "checkpoint"
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: verified (2 segments)" in verify.stdout
    assert "its worker was lost (outcome unknown)" in " ".join(verify.stderr.split())

"""Races between real processes and connections on one PostgreSQL database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg

from tenure.runtime.backends import ApprovalRecord, GovEvent
from tenure.runtime.backends._pg import PgBackend

_ROOT = Path(__file__).resolve().parents[2]


def _contenders(argvs: list[list[str]]) -> list[dict[str, int]]:
    """Start one contender process per argv, release them together, return their answers."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.distributed._contender", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_ROOT,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            answers.append(json.loads(out.strip().splitlines()[-1]))
        return answers
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_two_processes_racing_500_approvals_make_exactly_one_decision_each(
    pg_backend: PgBackend,
) -> None:
    member = await pg_backend.liveness.register("requester", None, 120, {})
    for i in range(500):
        await pg_backend.approvals.request(
            member,
            ApprovalRecord(
                id=f"apr_{i}",
                run_id="run_race",
                principal="alice",
                action="execute_tool",
                target="pay",
                rule_id="pay-needs-approval",
                step=str(i),
                args_digest="sha256:00",
                requested_at_us=i,
            ),
        )
    url = pg_backend.url
    # One approver grants; the other plays the waiter whose timeout races the approver.
    answers = await anyio.to_thread.run_sync(
        _contenders,
        [
            ["approve", url, "approver", "500", "granted"],
            ["approve", url, "waiter", "500", "timeout"],
        ],
    )
    assert answers[0]["won"] + answers[1]["won"] == 500
    rows = await pg_backend.db.fetch("SELECT decision, approver FROM tenure_approvals ORDER BY id")
    assert len(rows) == 500
    assert all(
        (r["decision"], r["approver"]) in {("granted", "approver"), ("timeout", "waiter")}
        for r in rows
    )
    assert sum(r["approver"] == "approver" for r in rows) == answers[0]["won"]
    decided = [e for e in await pg_backend.log.read(0) if e.kind == "approval.decided"]
    assert sorted(e.data["request"] for e in decided) == sorted(f"apr_{i}" for i in range(500))


async def test_four_processes_on_one_1000_call_budget_are_granted_exactly_1000(
    pg_backend: PgBackend,
) -> None:
    url = pg_backend.url
    answers = await anyio.to_thread.run_sync(
        _contenders, [["debit", url, f"worker-{i}", "run_budget", "1000"] for i in range(4)]
    )
    assert sum(a["granted"] for a in answers) == 1000
    assert all(a["granted"] > 0 for a in answers)  # they really contended
    assert await pg_backend.budgets.used("run_budget") == {"steps": 1000.0}


async def test_a_reader_tailing_the_log_under_concurrent_writers_skips_nothing(
    pg_backend: PgBackend,
) -> None:
    """The sequence trap: with a bigserial, readers resuming at ``id > last`` skip rows."""
    writers, each = 8, 60
    seen: list[GovEvent] = []
    done = anyio.Event()

    async def write(k: int) -> None:
        conn = await asyncpg.connect(pg_backend.url)
        try:
            for i in range(each):
                await conn.execute(
                    "SELECT tenure_append('revoke', jsonb_build_object('target', $1::text))",
                    f"run_{k}_{i}",
                )
        finally:
            await conn.close()

    async def tail() -> None:
        last = 0
        while not done.is_set() or last < writers * each:
            for event in await pg_backend.log.read(last):
                seen.append(event)
                last = event.revision

    async with anyio.create_task_group() as tg:
        tg.start_soon(tail)
        async with anyio.create_task_group() as wg:
            for k in range(writers):
                wg.start_soon(write, k)
        done.set()
    assert [e.revision for e in seen] == list(range(1, writers * each + 1))
    targets = {e.data["target"] for e in seen}
    assert len(targets) == writers * each


async def test_concurrent_reapers_declare_a_lapsed_member_lost_exactly_once(
    pg_backend: PgBackend,
) -> None:
    member = await pg_backend.liveness.register("lapsing", "pool-a", 0.3, {})
    others = [await PgBackend.connect(pg_backend.url) for _ in range(4)]
    try:
        await anyio.sleep(0.4)
        found: list[int] = []

        async def reap(b: PgBackend) -> None:
            found.append(len(await b.liveness.reap()))

        async with anyio.create_task_group() as tg:
            for b in [pg_backend, *others]:
                tg.start_soon(reap, b)
    finally:
        for b in others:
            await b.close()
    assert sum(found) == 1
    lost = [e for e in await pg_backend.log.read(0) if e.kind == "worker.lost"]
    assert [e.data["member"] for e in lost] == [member.id]
    generation = await pg_backend.db.fetchval(
        "SELECT generation FROM tenure_members WHERE id = $1", member.id
    )
    assert generation == member.generation + 1

"""A run's budget as every process of it counts it: each step's start and its debit are one
transaction, and ``max_concurrency`` holds across every worker of the run (a step that ends
gives its place back; a lost worker's places are released when it is reaped)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tenure import Context, PolicyDenied, Runtime, agent
from tenure.runtime.backends import Batch, Debit, Member, Refusal
from tenure.runtime.backends._pg import PgBackend, upgrade
from tenure.runtime.backends._segment import NOT_STARTED_RULE

from .conftest import WorkerProcess, export_and_verify, marked
from .pool_agents import caller, crowd, lookup, resilient, sequentials

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'


def _policy(tmp_path: Path, budgets: str = "") -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(ALLOW + ("\n[budgets]\n" + budgets if budgets else ""))
    return path


async def _records(backend: PgBackend, run_id: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for seg in await backend.evidence.segments(run_id):
        lines, _ = await backend.evidence.records(seg.id)
        found.extend(json.loads(line) for line in lines)
    return found


async def _released(backend: PgBackend) -> None:
    """Wait until no step of any run is counted live (the workers' parts end on their own)."""
    with anyio.fail_after(30):
        while True:  # other processes' commits: polled
            if not await backend.db.fetchval("SELECT count(*) FROM tenure_run_live"):
                return
            await anyio.sleep(0.05)


async def _live(backend: PgBackend, run_id: str, places: int) -> None:
    """Wait until ``places`` steps of the run are counted live across its processes."""
    with anyio.fail_after(30):
        while True:  # other processes' commits: polled
            live = await backend.db.fetchval(
                "SELECT coalesce(sum(live), 0) FROM tenure_run_live WHERE run_id = $1", run_id
            )
            if live >= places:
                assert live == places, f"{live} places taken before any part's call"
                return
            await anyio.sleep(0.02)


async def test_each_governed_call_commits_its_start_and_its_debit_in_one_statement(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip per call: the step's records, its ``step.start`` and its debit go in
    one ``tenure_commit``; nothing is debited on its own any more."""
    await upgrade(pg_url)
    policy = _policy(tmp_path, "max_tool_calls = 1000\nmax_concurrency = 8\n")
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        commits: list[tuple[Batch, Debit | None]] = []
        commit = backend.evidence.commit

        async def counted(
            member: Member, batch: Batch, debit: Debit | None = None
        ) -> Refusal | None:
            commits.append((batch, debit))
            return await commit(member, batch, debit)

        async def forbidden(member: Member, debit: Debit) -> Refusal | None:
            raise AssertionError("a step's debit went on its own")

        monkeypatch.setattr(backend.evidence, "commit", counted)
        monkeypatch.setattr(backend.budgets, "debit", forbidden)
        handle = await rt.start(caller, 50, principal="alice", scopes={"notes:read"})
        await handle.result()
        used = await backend.budgets.used(handle.run_id)
        segment = await backend.evidence.records(handle.run_id)
    starts = [(b, d) for b, d in commits if d is not None]
    assert len(starts) == 51  # the root agent and each of its 50 calls
    assert all(b.lines and b'"kind":"step.start"' in b.lines[-1] for b, _ in starts)
    assert all(b'"kind":"decision"' in b.instead[-1] for b, _ in starts)
    assert len(commits) <= 51 + 2  # (its records before it, its last ones after it)
    assert used == {"steps": 51.0, "tool_calls": 50.0}
    assert segment == (
        (handle.evidence_path / "ledger.jsonl").read_bytes().splitlines(keepends=True),
        (handle.evidence_path / "checkpoint").read_text(),
    )


async def test_max_concurrency_holds_across_every_worker_of_a_run(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """``max_concurrency = 5``: the planner and its three delegations hold four places in
    the delegating process; each part on a worker takes one more for its tool call. No
    process alone passes five — the run's shared count does, and the sixth is refused:
    exactly one of the three held tool calls ever starts."""
    await upgrade(pg_url)
    policy = _policy(tmp_path, "max_concurrency = 5\n")
    for i in range(3):
        workers(pg_url, f"w{i}", concurrency=1)
    markers = [tmp_path / f"held-{i}" for i in range(3)]
    release, go = tmp_path / "release", tmp_path / "go"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(
            crowd, [str(m) for m in markers], str(release), str(go), principal="alice", ttl=60
        )
        # The parts make their calls only once all four places of the delegating process
        # are counted: otherwise a part's call may take a place before the third delegation
        # asks for one, and the refusal falls on that delegation instead.
        await _live(backend, handle.run_id, 4)
        go.write_text("go\n")
        with anyio.fail_after(60), pytest.raises(PolicyDenied) as caught:
            await handle.result()
        await _released(backend)
        records = await _records(backend, handle.run_id)
    assert caught.value.check == "budget.max_concurrency"
    assert "across all its workers (6 live governed tasks)" in caught.value.reason
    held = [r for r in records if r["kind"] == "step.start" and r["target"] == "hold"]
    refused = [r for r in records if r.get("rule") == NOT_STARTED_RULE]
    assert len(held) == 1 and len(refused) >= 1
    assert sum(m.exists() for m in markers) == 1
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: verified (4 segments)" in verify.stdout


async def test_a_step_that_ends_gives_its_place_back_to_every_worker_of_the_run(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """Three parts on three workers make 20 tool calls each, one after the other, under
    ``max_concurrency = 7`` (planner + 3 delegations + 3 calls at a time): every call's
    place is released with its segment's next commit, so the run completes, and when it
    has, nothing of it is counted live any more."""
    await upgrade(pg_url)
    policy = _policy(tmp_path, "max_concurrency = 7\n")
    for i in range(3):
        workers(pg_url, f"w{i}", concurrency=1)
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        with anyio.fail_after(90):
            result = await rt.run(
                sequentials, 3, 20, principal="alice", scopes={"notes:read"}, ttl=90
            )
        assert result == [20, 20, 20]
        assert await backend.db.fetchval("SELECT count(*) FROM tenure_run_live") == 0
        used = await backend.budgets.used(await _run_id(backend))
    assert used["tool_calls"] == 60


async def _run_id(backend: PgBackend) -> str:
    run_id: str = await backend.db.fetchval("SELECT id FROM tenure_runs ORDER BY created_at")
    return run_id


async def test_a_lost_workers_places_are_released_when_it_is_reaped(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """``max_concurrency = 3``: the planner, its delegation and the part's held tool call.
    The part's worker is killed; once the reaper declares it lost its place is released,
    so the planner's second delegation (to the other worker) fits where the dead worker's
    count would otherwise have refused it. The run's evidence verifies, the loss in it."""
    await upgrade(pg_url)
    policy = _policy(tmp_path, "max_concurrency = 3\n")
    pool = {name: workers(pg_url, name, concurrency=1) for name in ("w1", "w2")}
    first, second, release = (tmp_path / n for n in ("first", "second", "release"))
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(
            resilient, str(first), str(second), str(release), principal="alice", ttl=60
        )
        await marked(first)
        claimer = await backend.db.fetchval(
            "SELECT m.name FROM tenure_tasks t JOIN tenure_members m ON m.id = t.claimer"
        )
        assert await backend.db.fetchval("SELECT sum(live) FROM tenure_run_live") == 3
        lost = pool[claimer]
        lost.proc.kill()
        lost.proc.wait()
        await marked(second)
        release.write_text("go\n")
        with anyio.fail_after(30):
            assert await handle.result() == "released"
    report = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert report.returncode == 0, report.stdout + report.stderr
    assert f"run {handle.run_id}: verified (3 segments)" in report.stdout
    assert "its worker was lost (outcome unknown)" in " ".join(report.stderr.split())


@agent(scopes={"notes:read"})
async def calls_when_told(ctx: Context, go: anyio.Event, calls: int) -> int:
    await go.wait()
    for _ in range(calls):
        await ctx.call(lookup, "x")
    return calls


async def test_a_start_refused_by_what_other_processes_spent_is_recorded_as_not_started(
    pg_url: str, tmp_path: Path
) -> None:
    """``max_tool_calls = 3``, two of them spent by another process of the run: this
    process's second call is refused in its start's own transaction. Its segment (the same
    bytes as its run directory) holds the record that it did not start in place of its
    ``step.start``; the counters hold exactly three calls; the run verifies."""
    await upgrade(pg_url)
    policy = _policy(tmp_path, "max_tool_calls = 3\n")
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        go = anyio.Event()
        handle = await rt.start(calls_when_told, go, 10, principal="alice", scopes={"notes:read"})
        elsewhere = await backend.liveness.register("elsewhere", None, 60, {})
        spent = Debit(handle.run_id, {"tool_calls": 2}, {"tool_calls": 3})
        assert await backend.budgets.debit(elsewhere, spent) is None
        go.set()
        with pytest.raises(PolicyDenied) as caught:
            await handle.result()
        used = await backend.budgets.used(handle.run_id)
        lines, _ = await backend.evidence.records(handle.run_id)
    assert caught.value.check == "budget.max_tool_calls"
    assert "across all its workers (tool_calls would be 4)" in caught.value.reason
    assert used == {"steps": 2.0, "tool_calls": 3.0}  # the refused start took nothing
    assert lines == (handle.evidence_path / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    tools = [r for r in records if r["kind"] == "step.start" and r["action"] == "execute_tool"]
    not_started = [r for r in records if r.get("rule") == NOT_STARTED_RULE]
    assert len(tools) == 1 and len(not_started) == 1
    assert not_started[0]["step"] not in {r["step"] for r in tools}
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ended violation" in verify.stdout

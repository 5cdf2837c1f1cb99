"""A worker process's own promises: SIGTERM drains it, code that drifted from what the
delegating process pinned is refused, and its spans join the delegating trace."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tenure import AttestationMismatch, GovernanceUnavailable, Runtime
from tenure.runtime.backends._pg import PgBackend, upgrade

from .conftest import WorkerProcess, export_and_verify, marked
from .pool_agents import __file__ as AGENTS_FILE
from .pool_agents import crowd, delegates_lingerer, planner

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "allow.toml"
    path.write_text(ALLOW)
    return path


def _drain(worker: WorkerProcess) -> str:
    """SIGTERM, and the line the worker prints when it starts draining."""
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.stdout is not None
    return worker.proc.stdout.readline()


def _exit(worker: WorkerProcess) -> tuple[int, str]:
    assert worker.proc.stdout is not None
    rest = worker.proc.stdout.read()
    return worker.proc.wait(timeout=30), rest


async def test_sigterm_drains_a_worker_its_running_part_finishes_and_it_exits_0(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """SIGTERM mid-part: the worker claims nothing more (a part queued after the signal
    stays queued), the running part finishes and its result reaches its parent, and the
    worker leaves the control plane and exits 0."""
    await upgrade(pg_url)
    worker = workers(pg_url, "w1", concurrency=2)
    marker, release = tmp_path / "running", tmp_path / "release"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        first = await rt.start(crowd, [str(marker)], str(release), principal="alice", ttl=60)
        await marked(marker)
        line = await anyio.to_thread.run_sync(_drain, worker)
        assert "draining: no new claims" in line
        later = tmp_path / "later"
        second = await rt.start(crowd, [str(later)], str(release), principal="alice", ttl=60)
        with anyio.fail_after(30):
            while True:  # queued by the second run (the queue's NOTIFY wakes the wait)
                await backend.queue.wait_queued("research", 5)
                if await backend.db.fetchval(
                    "SELECT count(*) FROM tenure_tasks WHERE run_id = $1", second.run_id
                ):
                    break
        release.write_text("go\n")
        with anyio.fail_after(30):
            assert await first.result() == ["released"]
        code, rest = await anyio.to_thread.run_sync(_exit, worker)
        assert code == 0 and "drained after 1 task(s)" in rest
        state = await backend.db.fetchval(
            "SELECT state FROM tenure_tasks WHERE run_id = $1", second.run_id
        )
        assert state == "queued" and not later.exists()
        member = await backend.db.fetchval("SELECT state FROM tenure_members WHERE name = 'w1'")
        assert member == "left"
        second.cancel()
    verify = await export_and_verify(pg_url, first.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_sigterm_stops_a_part_still_running_after_cleanup_grace_and_exits_0(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """A part that would never end is stopped once ``cleanup_grace`` has passed; its
    parent learns it was stopped (``worker.stopped``); the worker exits 0; the part's
    evidence says it was cancelled by the drain."""
    await upgrade(pg_url)
    worker = workers(pg_url, "w1", concurrency=1)
    marker = tmp_path / "running"
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(delegates_lingerer, str(marker), principal="alice", ttl=60)
        await marked(marker)
        assert "draining" in await anyio.to_thread.run_sync(_drain, worker)
        with anyio.fail_after(30), pytest.raises(GovernanceUnavailable) as caught:
            await handle.result()
        code, _ = await anyio.to_thread.run_sync(_exit, worker)
    assert code == 0
    assert caught.value.check == "worker.stopped"
    part = next(worker.evidence.glob(f"{handle.run_id}.*"))
    end = [json.loads(x) for x in (part / "ledger.jsonl").read_text().splitlines()][-2]
    assert (end["kind"], end["status"]) == ("run.end", "cancelled")
    assert "draining" in end["reason"]
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_worker_whose_agent_code_drifted_refuses_the_task_with_attestation_mismatch(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """The attack (or the accident): a worker deployed with other code under the same
    agent name. The delegating process pinned the code digest it measured; the worker
    measures its own and refuses to run what does not match, before anything runs."""
    await upgrade(pg_url)
    drifted = tmp_path / "drifted" / "pool_agents.py"
    drifted.parent.mkdir()
    source = await anyio.Path(AGENTS_FILE).read_text()
    assert "return found.upper()" in source
    drifted.write_text(source.replace("return found.upper()", "return found.lower()"))
    worker = workers(pg_url, "w1", agents=str(drifted))
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        backend = rt._link.backend  # type: ignore[union-attr]
        assert isinstance(backend, PgBackend)
        handle = await rt.start(planner, ["a"], principal="alice", scopes={"notes:read"})
        with anyio.fail_after(30), pytest.raises(AttestationMismatch) as caught:
            await handle.result()
        segments = await backend.evidence.segments(handle.run_id)
        task = await backend.db.fetchrow("SELECT state, error FROM tenure_tasks")
    assert caught.value.check == "attestation.code"
    assert [s.id for s in segments] == [handle.run_id]  # nothing of it ran anywhere else
    assert task is not None and task["state"] == "failed"
    assert task["error"]["type"] == "AttestationMismatch"
    assert not any(worker.evidence.glob("run_*"))
    records = [
        json.loads(x) for x in (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    ]
    returned = [r for r in records if r["kind"] == "delegation.returned"]
    assert [r["status"] for r in returned] == ["failed"]
    assert worker.proc.poll() is None


async def test_the_trace_context_travels_with_the_task_one_trace_across_processes(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """The delegating process records its spans in memory, the worker exports its own to a
    file: every span of the worker's parts is in the delegating run's trace, and each part's
    run span hangs under the delegating step's span."""
    await upgrade(pg_url)
    spans_file = tmp_path / "worker-spans.jsonl"
    worker = workers(
        pg_url, "w1", command=("-m", "tests.distributed._traced_worker", str(spans_file))
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime(
        backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy, tracer_provider=provider
    ) as rt:
        result = await rt.run(planner, ["a", "b"], principal="alice", scopes={"notes:read"})
    assert result == ["NOTES ON A", "NOTES ON B"]
    worker.stop()
    here = exporter.get_finished_spans()
    there = [json.loads(line) for line in spans_file.read_text().splitlines()]
    trace_ids = {f"{s.context.trace_id:032x}" for s in here}
    assert len(trace_ids) == 1
    assert {s["trace"] for s in there} == trace_ids
    delegations = {
        f"{s.context.span_id:016x}"
        for s in here
        if s.name == "invoke_agent researcher" and s.context is not None
    }
    assert len(delegations) == 2
    by_id = {s["span"]: s for s in there}
    roots = [s for s in there if s["parent"] not in by_id]
    assert len(roots) == 2 and {s["parent"] for s in roots} == delegations
    assert {s["name"] for s in there} >= {"invoke_agent researcher", "execute_tool lookup"}

"""Crash safety: after ``kill -9`` mid-run, what is on disk still verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tenure.crypto import PUBLIC_KEY_NAME, load_public_key
from tenure.evidence import verify_run

_WORKFLOW = textwrap.dedent(
    """
    import sys
    import anyio
    from tenure import Context, Runtime, agent, tool
    from tenure.policies import PolicySet

    POLICY = 'version = 1\\ndefault = "deny"\\n[[rules]]\\nid = "all"\\neffect = "allow"\\n'

    @tool
    async def step(i: int) -> int:
        await anyio.sleep(0.001)
        return i

    @agent
    async def worker(ctx: Context, n: int) -> None:
        for i in range(n):
            await ctx.call(step, i)

    @agent
    async def root(ctx: Context) -> None:
        async with ctx.parallel() as p:
            for _ in range(4):
                p.start(worker, 1_000_000)

    async def main() -> None:
        async with Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=sys.argv[1],
                           checkpoint_every=200) as rt:
            handle = await rt.start(root, principal="ops", ttl=600)
            print(handle.run_id, flush=True)
            await handle.result()

    anyio.run(main)
    """
)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, "the workflow exited before it could be killed"
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} records")


def _run_and_kill(tmp_path: Path, records: int) -> tuple[Path, Path]:
    """Start the workflow in a subprocess, SIGKILL it once ``records`` are on disk."""
    script = tmp_path / "workflow.py"
    script.write_text(_WORKFLOW)
    evidence = tmp_path / "runs"
    with subprocess.Popen(
        [sys.executable, str(script), str(evidence)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            run_id = proc.stdout.readline().strip()
            ledger = evidence / run_id / "ledger.jsonl"
            _wait_for_lines(ledger, records, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return evidence / run_id, Path(os.environ["TENURE_KEY_DIR"]) / PUBLIC_KEY_NAME


def test_kill_9_mid_run_leaves_evidence_that_verifies(tmp_path: Path) -> None:
    """Every record the OS received before SIGKILL verifies; the run reads as unfinished."""
    run_dir, pub = _run_and_kill(tmp_path, 900)
    report = verify_run(run_dir, load_public_key(pub))
    assert report.verdict == "incomplete", report.problem
    assert not report.failures and report.run_status == "incomplete"
    assert report.checkpoints >= 4  # checkpoints every 200 records were signed on the way
    assert "run.no_end" in report.codes


def test_a_torn_last_record_after_a_crash_is_reported_not_accepted(tmp_path: Path) -> None:
    """The write of the next record cut short by a crash (half a line, no newline): verify
    names it. (Cutting a record already on disk instead would, whenever the kill landed just
    after a checkpoint, cut a record the signed checkpoint covers: a truncation, rightly
    invalid — not what a crash can leave.)"""
    run_dir, pub = _run_and_kill(tmp_path, 300)
    ledger = run_dir / "ledger.jsonl"
    data = ledger.read_bytes()
    assert data.endswith(b"\n")  # each record reaches the OS in one write
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    torn = last[: len(last) // 2]
    ledger.write_bytes(data + torn)
    report = verify_run(run_dir, load_public_key(pub))
    assert report.torn_tail
    assert report.torn_bytes == len(torn)
    assert "ledger.torn_tail" in report.codes and report.verdict == "incomplete"
    # Everything before the torn line is still accepted as evidence.
    assert report.records == data.count(b"\n")

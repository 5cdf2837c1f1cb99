"""Evidence faults: the ledger file becomes unwritable, a write hits ENOSPC, fsync fails.

Nothing executes that the ledger could not record: the step whose ``step.start`` could
not be written never runs. The failed ledger cannot record its own failure, so there is
no ``run.end``; the stop is raised to the caller, and what reached the file verifies.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tenure import GovernanceUnavailable, SigningKey
from tenure.evidence._note import open_checkpoint, origin_for
from tests.faults.conftest import (
    FaultyOps,
    Workflow,
    assert_durable_prefix_verifies,
    assert_stopped,
    records,
    runtime,
)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EROFS])
async def test_ledger_write_error_stops_the_run_before_the_step_runs(
    err: int, wf: Workflow, evidence: Path
) -> None:
    """A write raising OSError (disk full, I/O error, read-only fs): ledger.append."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        ops = FaultyOps()
        handle._run.ledger._ops = ops
        ops.write_error = OSError(err, os.strerror(err))
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert_stopped(info.value, GovernanceUnavailable, "ledger.append", wf)
    assert errno.errorcode[err] in str(info.value)
    assert ops.writes_after_arming == 1  # the failed ledger is never written again
    assert handle._run.ledger.failed
    assert_durable_prefix_verifies(handle.evidence_path, key)


async def test_ledger_file_descriptor_becoming_unwritable_stops_the_run(
    wf: Workflow, evidence: Path
) -> None:
    """A real OS error, no mock: the ledger's descriptor now refers to a read-only file."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        ledger = handle._run.ledger
        ledger.flush()
        readonly = os.open(ledger.path, os.O_RDONLY)
        try:
            os.dup2(readonly, ledger._fd)
        finally:
            os.close(readonly)
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert_stopped(info.value, GovernanceUnavailable, "ledger.append", wf)
    assert "EBADF" in str(info.value)
    rep = assert_durable_prefix_verifies(handle.evidence_path, key)
    assert rep.records == len(records(handle.evidence_path))


async def test_fsync_failure_stops_the_run_and_is_never_retried(
    wf: Workflow, evidence: Path
) -> None:
    """fsync="record": an EIO from fsync is ledger.fsync; no later fsync pretends success."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key, fsync="record") as rt:
        handle = await wf.start(rt)
        ops = FaultyOps()
        handle._run.ledger._ops = ops
        ops.fsync_error = OSError(errno.EIO, "Input/output error")
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert_stopped(info.value, GovernanceUnavailable, "ledger.fsync", wf)
    assert ops.fsyncs_after_arming == 1  # fsyncgate: a failed fsync is not retried
    assert handle._run.ledger.failed
    assert_durable_prefix_verifies(handle.evidence_path, key)


async def test_a_checkpoint_fsync_failing_off_the_loop_stops_the_run(
    wf: Workflow, evidence: Path
) -> None:
    """fsync="checkpoint" (the default): the checkpoint's fsync runs in a worker thread; its
    EIO stops the run all the same (ledger.fsync), no checkpoint file is published past it,
    it is not retried, and every tool body that ran had its step.start in the file."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key, checkpoint_every=4) as rt:
        handle = await wf.start(rt)  # the ticker keeps appending records: checkpoints follow
        ledger = handle._run.ledger
        ops = FaultyOps()
        ops.fsync_error = OSError(errno.EIO, "Input/output error")
        ledger._ops = ops
        # A publication under way before the fault may still land: none signed after it.
        signed_before = ledger._signed[0] if ledger._signed is not None else 0
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    error = info.value
    assert type(error) is GovernanceUnavailable and error.check == "ledger.fsync", error
    assert "EIO" in str(error) and error.run_id == handle.run_id
    assert ops.fsyncs_after_arming == 1  # fsyncgate: a failed fsync is not retried
    assert ledger.failed
    checkpoint = ledger.run_dir / "checkpoint"
    if checkpoint.exists():
        note = open_checkpoint(checkpoint.read_text(), origin_for(handle.run_id), key.public_key)
        assert note.size <= signed_before
    assert wf.after == []  # the workers never got past their wait
    started = [r for r in records(handle.evidence_path) if r["kind"] == "step.start"]
    assert len([r for r in started if r["target"] == wf.act.name]) >= len(wf.effects)
    assert_durable_prefix_verifies(handle.evidence_path, key)

"""Checkpoints published in the background: the caller never waits for the disk, and the
published checkpoint is never ahead of what is durable, nor older than one published."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from tenure._errors import GovernanceUnavailable
from tenure.crypto import SigningKey, b64e
from tenure.evidence import verify_run
from tenure.evidence._ledger import Ledger
from tenure.evidence._ledger_io import FileOps, LedgerConfig
from tenure.evidence._note import open_checkpoint, origin_for

NO_TIMER = LedgerConfig(checkpoint_every=3, checkpoint_interval=0)


class _Ops(FileOps):
    """Logs the order of fsyncs and checkpoint-file renames; an fsync may be made to fail."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fsync_error: Exception | None = None

    def fsync(self, fd: int) -> None:
        self.log.append("fsync")
        if self.fsync_error is not None:
            raise self.fsync_error
        super().fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self.log.append(f"publish {dst.name}")
        super().replace(src, dst)


def _ledger(
    tmp_path: Path, cfg: LedgerConfig = NO_TIMER
) -> tuple[Ledger, SigningKey, _Ops, list[Callable[[], None]]]:
    key = SigningKey.generate()
    ops = _Ops()
    led = Ledger.create(tmp_path / "r1", "r1", key, cfg, tmp_path / ".witness", file_ops=ops)
    led.append("run.start", {"run": "r1", "pubkey": b64e(key.public_raw)})
    jobs: list[Callable[[], None]] = []
    led.background = jobs.append
    return led, key, ops, jobs


def _published_size(path: Path, key: SigningKey) -> int:
    return open_checkpoint(path.read_text(), origin_for("r1"), key.public_key).size


def test_a_checkpoint_is_appended_at_once_and_published_only_after_its_fsync(
    tmp_path: Path,
) -> None:
    led, key, ops, jobs = _ledger(tmp_path)
    for k in range(2):
        led.append("note", {"k": k})
    assert led.size == 4 and len(jobs) == 1  # the checkpoint record is in the ledger
    assert ops.log == []  # the caller neither synced nor published
    assert not (led.run_dir / "checkpoint").exists()
    jobs.pop()()
    assert ops.log == ["fsync", "publish checkpoint", "publish r1.checkpoint"]
    assert _published_size(led.run_dir / "checkpoint", key) == 3
    led.close()
    assert not verify_run(led.run_dir, key.public_key).failures


def test_an_older_checkpoint_published_late_never_replaces_a_newer_one(tmp_path: Path) -> None:
    led, key, ops, jobs = _ledger(tmp_path)
    for k in range(4):
        led.append("note", {"k": k})
    assert led.size == 7 and len(jobs) == 2  # checkpoints of sizes 3 and 6
    newer, older = jobs.pop(), jobs.pop()
    newer()  # the second checkpoint's job runs first: it publishes the newest note
    older()  # nothing older is published over it
    witness = tmp_path / ".witness" / "r1.checkpoint"
    assert _published_size(witness, key) == _published_size(led.run_dir / "checkpoint", key) == 6
    assert ops.log.count("publish checkpoint") == 1
    led.close()
    assert _published_size(witness, key) == led.size - 1  # the final note, published at commit


def test_a_publication_left_queued_at_close_changes_nothing_after_the_commit(
    tmp_path: Path,
) -> None:
    led, key, _, jobs = _ledger(tmp_path)
    for k in range(2):
        led.append("note", {"k": k})
    led.close()  # the commit publishes the final note and releases the file
    jobs.pop()()  # the queued job finds the ledger closed: nothing is written
    assert _published_size(led.run_dir / "checkpoint", key) == led.size - 1
    assert not verify_run(led.run_dir, key.public_key).failures


def test_a_background_fsync_failure_fails_the_ledger_and_its_commit(tmp_path: Path) -> None:
    led, _, ops, jobs = _ledger(tmp_path)
    for k in range(2):
        led.append("note", {"k": k})
    ops.fsync_error = OSError(errno.EIO, "Input/output error")
    with pytest.raises(GovernanceUnavailable) as info:
        jobs.pop()()
    assert info.value.check == "ledger.fsync" and "EIO" in info.value.reason
    assert not (led.run_dir / "checkpoint").exists()  # never published past a failed fsync
    with pytest.raises(GovernanceUnavailable):
        led.append("note", {"k": 3})
    fsyncs = ops.log.count("fsync")
    with pytest.raises(GovernanceUnavailable) as again:
        led.close()
    assert again.value.reason == info.value.reason
    assert ops.log.count("fsync") == fsyncs  # fsyncgate: a failed fsync is not retried
    assert led.closed and led._fd < 0


def test_with_fsync_per_record_checkpoints_stay_in_the_caller(tmp_path: Path) -> None:
    led, _, ops, jobs = _ledger(tmp_path, LedgerConfig(checkpoint_every=3, fsync="record"))
    for k in range(2):
        led.append("note", {"k": k})
    assert jobs == [] and "publish checkpoint" in ops.log
    led.close()


def test_an_unexpected_error_in_the_background_fails_the_ledger_too(tmp_path: Path) -> None:
    led, _, ops, jobs = _ledger(tmp_path)
    for k in range(2):
        led.append("note", {"k": k})
    ops.fsync_error = ValueError("a file-system layer's bug")
    with pytest.raises(GovernanceUnavailable) as info:
        jobs.pop()()
    assert (
        info.value.check == "ledger.checkpoint" and "a file-system layer's bug" in info.value.reason
    )
    with pytest.raises(GovernanceUnavailable):
        led.close()

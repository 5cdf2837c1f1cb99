"""The runtime's commit threads: every ledger handed over is committed and reported, at most
COMMIT_THREADS at once, failures come back to the loop, and a commit under way is waited for
even when the closing task is cancelled."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import anyio
import pytest

from tenure._errors import GovernanceUnavailable
from tenure.crypto import SigningKey
from tenure.evidence._ledger import Ledger
from tenure.evidence._ledger_io import FileOps, LedgerConfig
from tenure.runtime.services._commit import COMMIT_THREADS, EvidenceCommits


class _Gated(FileOps):
    """Counts fsyncs; each one waits for ``release`` (a commit held in its thread)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.synced: list[int] = []
        self.lock = threading.Lock()
        self.at_once = 0
        self.most_at_once = 0

    def fsync(self, fd: int) -> None:
        with self.lock:
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        self.entered.release()
        self.release.wait(30)
        with self.lock:
            self.at_once -= 1
            self.synced.append(fd)
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)


def _ledger(tmp_path: Path, name: str, ops: FileOps) -> Ledger:
    led = Ledger.create(
        tmp_path / name,
        name,
        SigningKey.generate(),
        LedgerConfig(checkpoint_interval=0),
        tmp_path / ".witness",
        file_ops=ops,
    )
    led.append("run.start", {"run": name})
    return led


async def test_ledgers_closed_together_are_all_committed_by_at_most_commit_threads(
    tmp_path: Path,
) -> None:
    ops = _Gated()
    commits = EvidenceCommits()
    n = 3 * COMMIT_THREADS
    ledgers = [_ledger(tmp_path, f"r{i}", ops) for i in range(n)]
    closed: list[str] = []

    async def close(led: Ledger) -> None:
        await commits.close(led)
        closed.append(led.run_id)

    async with anyio.create_task_group() as tg:
        for led in ledgers:
            tg.start_soon(close, led)
        for _ in range(COMMIT_THREADS):  # every thread holds a commit: the rest queue
            await anyio.to_thread.run_sync(ops.entered.acquire)
        assert closed == [] and len(commits._threads) == COMMIT_THREADS
        ops.release.set()
    assert sorted(closed) == sorted(led.run_id for led in ledgers)
    assert len(ops.synced) == n and ops.most_at_once == COMMIT_THREADS
    for led in ledgers:
        assert led.closed and (led.run_dir / "checkpoint").is_file()
        assert (tmp_path / ".witness" / f"{led.run_id}.checkpoint").is_file()
    threads = list(commits._threads)
    assert {t.name for t in threads} == {"tenure-commit"}
    commits.shutdown()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)


async def test_a_failed_commit_is_raised_on_the_loop_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    ops = _Gated(fail=True)
    ops.release.set()
    commits = EvidenceCommits()
    led = _ledger(tmp_path, "r1", ops)
    with pytest.raises(GovernanceUnavailable) as info:
        await commits.close(led)
    commits.shutdown()
    assert info.value.check == "ledger.fsync" and "EIO" in str(info.value)
    assert not (led.run_dir / "checkpoint").exists()  # never published past a failed fsync
    assert led.failed and ops.synced  # tried once, never retried


async def test_a_cancelled_closer_still_waits_for_its_commit(tmp_path: Path) -> None:
    ops = _Gated()
    commits = EvidenceCommits()
    led = _ledger(tmp_path, "r1", ops)
    returned = anyio.Event()

    async def close() -> None:
        await commits.close(led)
        returned.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(close)
        await anyio.to_thread.run_sync(ops.entered.acquire)
        tg.cancel_scope.cancel()  # the commit is in its thread: the closer keeps waiting
        ops.release.set()
    commits.shutdown()
    assert returned.is_set() and ops.synced and (led.run_dir / "checkpoint").is_file()

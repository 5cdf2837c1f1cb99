"""The ledger writer: record format, chain, checkpoints, durability and fail-closed I/O."""

from __future__ import annotations

import errno
import json
import os
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tenure._errors import GovernanceUnavailable
from tenure.crypto import SigningKey, b64e, load_public_key, record_bytes
from tenure.evidence import _ledger, verify_run
from tenure.evidence._ledger import Ledger
from tenure.evidence._ledger_io import FileOps, LedgerConfig
from tenure.evidence._merkle import leaf_hash, root_hash
from tenure.evidence._note import open_checkpoint, origin_for
from tests.support.run_builder import RunBuilder, build_run, read_lines, records

NO_TIMER = LedgerConfig(checkpoint_every=1000, checkpoint_interval=0)


def _open(
    tmp_path: Path, cfg: LedgerConfig = NO_TIMER, ops: FileOps | None = None, witness: bool = True
) -> tuple[Ledger, SigningKey]:
    key = SigningKey.generate()
    led = Ledger.create(
        tmp_path / "r1", "r1", key, cfg, tmp_path / ".witness" if witness else None, file_ops=ops
    )
    return led, key


def _start(led: Ledger, key: SigningKey) -> None:
    led.append("run.start", {"run": led.run_id, "pubkey": b64e(key.public_raw)})


def test_records_carry_common_fields_and_form_a_hash_chain(tmp_path: Path) -> None:
    led, _ = _open(tmp_path)
    for k in range(5):
        assert led.append("note", {"k": k}, trace="t" * 32, span="s" * 16) == k
    lines = read_lines(led.run_dir)
    prev = "0" * 64
    for k, line in enumerate(lines):
        assert line.endswith(b"\n")
        rec = json.loads(line)
        assert (rec["i"], rec["kind"], rec["prev"], rec["trace"], rec["span"], rec["k"]) == (
            k,
            "note",
            prev,
            "t" * 32,
            "s" * 16,
            k,
        )
        assert isinstance(rec["t"], int)
        assert record_bytes(rec) == line[:-1]  # canonical bytes on disk
        prev = leaf_hash(line[:-1]).hex()
    assert led.size == 5
    assert led.root == root_hash([leaf_hash(x[:-1]) for x in lines])
    led.close()


def test_an_owned_append_writes_the_same_bytes_as_a_copying_one(tmp_path: Path) -> None:
    # Two ledgers fed the same records on the same clock: one copies each fields dict, the
    # other is handed it (the common fields added in place, after the record's own keys).
    copying, key = _open(tmp_path / "a")
    owning = Ledger.create(tmp_path / "b" / "r1", "r1", key, NO_TIMER)
    copying.clock = owning.clock = lambda: 1_700_000_000_000_000
    for k in range(4):
        fields = {"zeta": k, "action": "execute_tool", "step": str(k), "args": "sha256:00"}
        copying.append("step.start", dict(fields), trace="t" * 32, span="s" * 16)
        kept = dict(fields)
        owning.append("step.start", kept, trace="t" * 32, span="s" * 16, owned=True)
        assert kept["i"] == k and kept["prev"] != ""  # taken over: it is the record now
    with pytest.raises(ValueError, match="kind"):
        owning.append("a", {"kind": "forged"}, owned=True)
    assert read_lines(copying.run_dir) == read_lines(owning.run_dir)
    assert copying.root == owning.root
    copying.close()
    owning.close()


def test_append_with_flush_reaches_the_os_before_returning(tmp_path: Path) -> None:
    led, _ = _open(tmp_path)
    led.append("a", {})
    assert len(read_lines(led.run_dir)) == 1
    led.append("b", {}, flush=False)
    assert len(read_lines(led.run_dir)) == 1  # buffered
    led.append("c", {})
    assert [json.loads(x)["kind"] for x in read_lines(led.run_dir)] == ["a", "b", "c"]
    led.close()


def test_checkpoint_every_n_records_signs_the_tree_before_the_record(tmp_path: Path) -> None:
    cfg = LedgerConfig(checkpoint_every=4, checkpoint_interval=0)
    led, key = _open(tmp_path, cfg)
    for _ in range(10):
        led.append("x", {})
    assert led.size == 13
    recs = records(led.run_dir)
    cps = [r for r in recs if r["kind"] == "checkpoint"]
    assert [c["size"] for c in cps] == [c["i"] for c in cps] == [4, 8, 12]
    lines = read_lines(led.run_dir)
    for c in cps:
        cp = open_checkpoint(c["note"], origin_for("r1"), key.public_key)
        assert cp.size == c["size"]
        assert cp.root == root_hash([leaf_hash(x[:-1]) for x in lines[: c["size"]]])
        assert cp.root.hex() == c["root"]
    led.close()


def test_time_based_checkpoint_is_checked_on_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SimpleNamespace(now=100.0)
    fake_time = SimpleNamespace(monotonic=lambda: clock.now, time_ns=lambda: 1_700_000_000 * 10**9)
    monkeypatch.setattr(_ledger, "time", fake_time)
    led, _ = _open(tmp_path, LedgerConfig(checkpoint_every=1000, checkpoint_interval=1.0))
    led.append("a", {})
    led.append("b", {})
    assert "checkpoint" not in [r["kind"] for r in records(led.run_dir)]
    clock.now += 1.5
    led.append("c", {})
    assert [r["kind"] for r in records(led.run_dir)] == ["a", "b", "c", "checkpoint"]
    led.close()


def test_close_leaves_the_checkpoint_file_covering_run_end(tmp_path: Path) -> None:
    b = build_run(tmp_path, steps=2)
    recs = records(b.run_dir)
    assert recs[-2]["kind"] == "run.end"
    assert recs[-1]["kind"] == "checkpoint" and recs[-1]["size"] == len(recs) - 1
    cp = open_checkpoint(
        (b.run_dir / "checkpoint").read_bytes(), origin_for(b.run_id), b.key.public_key
    )
    # One signature at close: the file is the final checkpoint record's note, which signs
    # every record before it (run.end included).
    assert cp.size == len(recs) - 1
    assert cp.root == root_hash([leaf_hash(x[:-1]) for x in read_lines(b.run_dir)[:-1]])
    assert (b.run_dir / "checkpoint").read_text() == recs[-1]["note"]
    witness = (tmp_path / ".witness" / f"{b.run_id}.checkpoint").read_bytes()
    assert witness == (b.run_dir / "checkpoint").read_bytes()
    pub = load_public_key(b.run_dir / "tenure.pub")
    assert pub.public_bytes_raw() == b.key.public_raw


def test_close_right_after_a_checkpoint_adds_no_second_record(tmp_path: Path) -> None:
    led, key = _open(tmp_path)
    led.append("a", {})
    led.checkpoint()
    led.close()
    recs = records(led.run_dir)
    assert [r["kind"] for r in recs] == ["a", "checkpoint"]
    cp = open_checkpoint(
        (led.run_dir / "checkpoint").read_bytes(), origin_for("r1"), key.public_key
    )
    assert cp.size == 1  # the last record is that checkpoint: nothing more to sign


def test_close_is_idempotent_and_append_after_close_is_a_caller_error(tmp_path: Path) -> None:
    led, _ = _open(tmp_path)
    led.append("a", {})
    led.close()
    size = led.size
    led.close()
    assert led.size == size
    with pytest.raises(RuntimeError, match="closed"):
        led.append("b", {})


def test_fields_may_not_override_common_fields(tmp_path: Path) -> None:
    led, _ = _open(tmp_path)
    with pytest.raises(ValueError, match="prev"):
        led.append("a", {"prev": "0" * 64})
    assert led.size == 0
    led.close()


def test_create_refuses_an_existing_ledger_and_bad_run_ids(tmp_path: Path) -> None:
    led, key = _open(tmp_path)
    led.close()
    with pytest.raises(FileExistsError):
        Ledger.create(tmp_path / "r1", "r1", key, NO_TIMER, None)
    for bad in ["", "a b", "a+b", "../x", "."]:
        with pytest.raises(ValueError):
            Ledger.create(tmp_path / "z", bad, key, NO_TIMER, None)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        LedgerConfig(checkpoint_every=0)
    with pytest.raises(ValueError):
        LedgerConfig(fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LedgerConfig(checkpoint_interval=-1)


class CountingOps(FileOps):
    """Counts calls and raises the configured OSError on the n-th call of one operation."""

    def __init__(self, fail_op: str = "", errno_: int = errno.ENOSPC, after: int = 0) -> None:
        self.calls: dict[str, int] = {}
        self.fail_op, self.errno_, self.after = fail_op, errno_, after

    def _hit(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if op == self.fail_op and self.calls[op] > self.after:
            raise OSError(self.errno_, os.strerror(self.errno_))

    def write(self, fd: int, data: bytes) -> int:
        self._hit("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._hit("fsync")
        super().fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self._hit("replace")
        super().replace(src, dst)


def test_fsync_per_record_syncs_every_append(tmp_path: Path) -> None:
    ops = CountingOps()
    led, _ = _open(tmp_path, LedgerConfig(checkpoint_interval=0, fsync="record"), ops)
    before = ops.calls.get("fsync", 0)
    for _ in range(5):
        led.append("a", {}, flush=False)  # "record" durability ignores flush=False
    assert ops.calls["fsync"] - before == 5
    assert len(read_lines(led.run_dir)) == 5
    led.close()


def test_fsync_never_does_not_sync(tmp_path: Path) -> None:
    ops = CountingOps()
    led, _ = _open(
        tmp_path, LedgerConfig(checkpoint_every=2, checkpoint_interval=0, fsync="never"), ops
    )
    ops.calls.clear()  # creation always fsyncs the new file and directories
    for _ in range(5):
        led.append("a", {})
    led.close()
    assert ops.calls.get("fsync", 0) == 0


def test_enospc_on_write_fails_closed_and_stays_failed(tmp_path: Path) -> None:
    """Disk full: the append raises GovernanceUnavailable naming file and errno; nothing later."""
    ops = CountingOps("write", errno.ENOSPC, after=10**9)
    led, key = _open(tmp_path, ops=ops)
    _start(led, key)
    for _ in range(2):
        led.append("ok", {})
    ops.after = ops.calls["write"]  # the next write fails
    with pytest.raises(GovernanceUnavailable) as info:
        led.append("step.start", {"step": "s"})
    exc = info.value
    assert exc.check == "ledger.append" and exc.run_id == "r1" and exc.source == "ledger"
    assert "ENOSPC" in exc.reason and "ledger.jsonl" in exc.reason
    assert led.failed
    writes = ops.calls["write"]
    with pytest.raises(GovernanceUnavailable) as again:
        led.append("step.start", {"step": "s2"})
    assert again.value.reason == exc.reason
    with pytest.raises(GovernanceUnavailable):
        led.checkpoint()
    led.close()  # releases the file, writes nothing, does not raise
    assert ops.calls["write"] == writes
    # What reached the disk still verifies (no checkpoint yet: an unsigned tail).
    rep = verify_run(led.run_dir, key.public_key)
    assert rep.verdict == "incomplete" and not rep.failures and rep.records == 3


def test_eio_on_fsync_is_never_retried(tmp_path: Path) -> None:
    """fsyncgate: after a failed fsync the ledger refuses everything; fsync is not called again."""
    ops = CountingOps("fsync", errno.EIO, after=10**9)
    led, _ = _open(tmp_path, LedgerConfig(checkpoint_interval=0, fsync="record"), ops)
    led.append("ok", {})
    ops.after = ops.calls["fsync"]  # the next fsync fails
    with pytest.raises(GovernanceUnavailable) as info:
        led.append("step.start", {})
    assert info.value.check == "ledger.fsync" and "EIO" in info.value.reason
    fsyncs = ops.calls["fsync"]
    for _ in range(3):
        with pytest.raises(GovernanceUnavailable):
            led.append("step.start", {})
    led.close()
    assert ops.calls["fsync"] == fsyncs


def test_checkpoint_write_failure_fails_the_ledger(tmp_path: Path) -> None:
    ops = CountingOps("replace", errno.EACCES, after=0)  # the first replace: checkpoint
    led, _ = _open(tmp_path, ops=ops)
    led.append("a", {})
    with pytest.raises(GovernanceUnavailable) as info:
        led.checkpoint()
    assert info.value.check == "ledger.checkpoint" and "EACCES" in info.value.reason
    assert "checkpoint" in info.value.reason
    with pytest.raises(GovernanceUnavailable):
        led.append("b", {})


def test_witness_write_failure_fails_the_ledger(tmp_path: Path) -> None:
    ops = CountingOps("replace", errno.EROFS, after=1)  # the run-dir checkpoint replace ok
    led, _ = _open(tmp_path, ops=ops)
    led.append("a", {})
    with pytest.raises(GovernanceUnavailable) as info:
        led.close()
    assert info.value.check == "ledger.witness" and ".witness" in info.value.reason
    assert led.failed and led.closed


def test_short_writes_are_completed(tmp_path: Path) -> None:
    class ShortOps(FileOps):
        def write(self, fd: int, data: bytes) -> int:
            return os.write(fd, bytes(data[:7]))

    led, key = _open(tmp_path, ops=ShortOps())
    _start(led, key)
    for k in range(3):
        led.append("a", {"k": k})
    led.close()
    rep = verify_run(led.run_dir, key.public_key)  # no run.end: complete records, no end
    assert rep.verdict == "incomplete" and not rep.failures and rep.records == 5


def test_memory_stays_flat_over_many_records(tmp_path: Path) -> None:
    """Nothing is kept per record: 20,000 more records cost no more than a few KB."""
    led, _ = _open(
        tmp_path, LedgerConfig(checkpoint_every=500, checkpoint_interval=0, fsync="never")
    )
    fields: dict[str, Any] = {"step": "s", "status": "ok", "result": "sha256:" + "0" * 64}
    for _ in range(2000):
        led.append("step.end", fields)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            led.append("step.end", fields, flush=False)
            led.append("step.end", fields)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024
    led.close()


def test_builder_run_verifies(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.step()
    b.end()
    assert verify_run(b.run_dir, b.key.public_key).ok

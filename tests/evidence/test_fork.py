"""The forking ledger: a record prepared two ways, chained once the choice is known, while
the records other tasks append meanwhile keep their index, time and order."""

from __future__ import annotations

import errno
import json
import os
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from tenure._errors import GovernanceUnavailable
from tenure.crypto import SigningKey, b64e
from tenure.evidence._fork import ForkingLedger
from tenure.evidence._ledger_io import FileOps, LedgerConfig

NO_TIMER = LedgerConfig(checkpoint_every=1000, checkpoint_interval=0)
START = ("step.start", {"step": "1", "lease": "l", "action": "execute_tool", "target": "t"})
NOT_STARTED = ("decision", {"step": "1", "effect": "deny", "rule": "backend.start"})


class CountingOps(FileOps):
    """Counts the ledger's writes (what reached the OS, and when)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.fail = False

    def write(self, fd: int, data: bytes) -> int:
        if self.fail:
            raise OSError(errno.EIO, "I/O error")
        self.writes.append(bytes(data))
        return os.write(fd, data)


def _open(
    tmp_path: Path, cfg: LedgerConfig = NO_TIMER, ops: FileOps | None = None
) -> ForkingLedger:
    key = SigningKey.generate()
    led = ForkingLedger.create(tmp_path / "r1", "r1", key, cfg, None, file_ops=ops)
    assert isinstance(led, ForkingLedger)
    led.append("run.start", {"run": "r1", "pubkey": b64e(key.public_raw)})
    return led


def _lines(tmp_path: Path) -> list[dict[str, Any]]:
    """The records, after checking that each names the hash of the line before it."""
    raw = (tmp_path / "r1" / "ledger.jsonl").read_bytes().splitlines()
    records = [json.loads(line) for line in raw]
    prev = "0" * 64
    for line, record in zip(raw, records, strict=True):
        assert record["prev"] == prev, record
        prev = sha256(b"\x00" + line).hexdigest()
    return records


@pytest.mark.parametrize("choice", [0, 1])
def test_the_settled_record_is_chained_and_records_held_meanwhile_follow_it(
    tmp_path: Path, choice: int
) -> None:
    ops = CountingOps()
    led = _open(tmp_path, ops=ops)
    led.append("decision", {"step": "1", "effect": "allow"}, flush=False)
    index, first, second = led.fork(START, NOT_STARTED, trace="t1", span="s1")
    assert ops.writes and b'"decision"' in ops.writes[-1]  # what came before reached the OS
    assert (index, led.size, led.forked) == (2, 3, True)
    written = len(ops.writes)
    held = led.append("usage", {"step": "2", "tokens": 5, "cost_micros": 0})
    led.flush()
    led.checkpoint()
    assert held == 3 and led.size == 4
    assert len(ops.writes) == written  # nothing chained, flushed or checkpointed
    led.settle(choice)
    assert not led.forked
    led.close()
    records = _lines(tmp_path)
    assert [r["i"] for r in records] == list(range(len(records)))
    chosen = records[2]
    assert json.dumps(chosen, separators=(",", ":")).encode() + b"\n" == (first, second)[choice]
    assert chosen["kind"] == ("step.start", "decision")[choice]
    assert (chosen["trace"], chosen["span"]) == ("t1", "s1")
    assert records[3]["kind"] == "usage" and records[3]["t"] >= chosen["t"]
    assert any(r["kind"] == "checkpoint" for r in records[4:])  # the deferred checkpoint


def test_both_continuations_come_from_the_same_chain_position(tmp_path: Path) -> None:
    led = _open(tmp_path)
    _, first, second = led.fork(START, NOT_STARTED)
    a, b = json.loads(first), json.loads(second)
    assert (a["i"], a["t"], a["prev"]) == (b["i"], b["t"], b["prev"])
    assert a["kind"] != b["kind"]


def test_closing_with_a_fork_open_chains_the_record_that_the_step_did_not_start(
    tmp_path: Path,
) -> None:
    led = _open(tmp_path)
    led.fork(START, NOT_STARTED)
    led.append("violation", {"error": "X", "check": "c", "reason": "r"})
    led.close()
    records = _lines(tmp_path)
    assert [r["kind"] for r in records[1:3]] == ["decision", "violation"]


def test_a_fork_is_refused_when_one_is_open_or_the_ledger_is_closed(tmp_path: Path) -> None:
    led = _open(tmp_path)
    with pytest.raises(RuntimeError, match="no fork open"):
        led.settle(0)
    led.fork(START, NOT_STARTED)
    with pytest.raises(RuntimeError, match="fork open already"):
        led.fork(START, NOT_STARTED)
    with pytest.raises(ValueError, match="settled with 0 or 1"):
        led.settle(2)
    with pytest.raises(ValueError, match="common record fields"):
        led.append("usage", {"i": 4})
    led.settle(0)
    with pytest.raises(ValueError, match="common record fields"):
        led.fork(("step.start", {"prev": "x"}), NOT_STARTED)
    led.close()
    with pytest.raises(RuntimeError, match="is closed"):
        led.fork(START, NOT_STARTED)


def test_a_failed_ledger_refuses_a_fork_and_any_record_held_in_one(tmp_path: Path) -> None:
    ops = CountingOps()
    led = _open(tmp_path, ops=ops)
    led.fork(START, NOT_STARTED)
    ops.fail = True
    led.append("usage", {"step": "2", "tokens": 1, "cost_micros": 0})
    with pytest.raises(GovernanceUnavailable) as caught:
        led.settle(0)  # the chosen record and the held one cannot reach the OS
    assert caught.value.check == "ledger.append"
    with pytest.raises(GovernanceUnavailable):
        led.fork(START, NOT_STARTED)
    with pytest.raises(GovernanceUnavailable):
        led.append("usage", {"step": "3", "tokens": 1, "cost_micros": 0})


def test_a_checkpoint_due_by_count_is_taken_when_the_fork_settles(tmp_path: Path) -> None:
    led = _open(tmp_path, LedgerConfig(checkpoint_every=3, checkpoint_interval=0))
    led.fork(START, NOT_STARTED)
    for n in range(3):
        led.append("usage", {"step": str(n), "tokens": 1, "cost_micros": 0})
    led.settle(0)
    led.close()
    kinds = [r["kind"] for r in _lines(tmp_path)]
    assert kinds[:5] == ["run.start", "step.start", "usage", "usage", "usage"]
    assert kinds[5] == "checkpoint"

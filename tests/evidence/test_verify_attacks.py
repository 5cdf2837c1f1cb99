"""Attacks on a run's evidence, each rejected with the first bad record named.

Every test tampers with a valid run directory (or writes a run whose records are
well-signed but semantically wrong) and asserts that :func:`verify_run` rejects it and
reports the index and kind of the first bad record. The untampered run verifies first,
so each rejection is caused by the attack alone.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tenure.crypto import SigningKey, canonical, record_bytes, sign_envelope
from tenure.evidence import INTOTO_PAYLOAD_TYPE, VerifyReport, verify_run
from tenure.evidence._ledger_io import LedgerConfig
from tenure.evidence._merkle import leaf_hash
from tenure.evidence._note import sign_checkpoint
from tests.support.run_builder import (
    RunBuilder,
    build_run,
    now_us,
    read_lines,
    records,
    write_lines,
)


def _verify(b: RunBuilder, **kw: Any) -> VerifyReport:
    return verify_run(b.run_dir, b.key.public_key, **kw)


def _valid(tmp_path: Path, steps: int = 3, **kw: Any) -> RunBuilder:
    b = build_run(tmp_path, steps, **kw)
    rep = _verify(b)
    assert rep.ok, rep.failure_line()
    return b


def _rechain(recs: list[dict[str, Any]]) -> list[bytes]:
    """Renumber and re-hash records the way a forger would (valid-looking i and prev)."""
    out, prev = [], "0" * 64
    for i, rec in enumerate(recs):
        rec = {**rec, "i": i, "prev": prev}
        line = record_bytes(rec)
        prev = leaf_hash(line).hex()
        out.append(line + b"\n")
    return out


def _index_of(recs: list[dict[str, Any]], kind: str, nth: int = 0) -> int:
    return int([r["i"] for r in recs if r["kind"] == kind][nth])


def test_flipped_byte_in_a_record_is_detected_and_named(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    lines = read_lines(b.run_dir)
    k = 4  # the first step.end: its result digest
    pos = lines[k].index(b'"result":"') + 20
    lines[k] = lines[k][:pos] + bytes([lines[k][pos] ^ 0x01]) + lines[k][pos + 1 :]
    write_lines(b.run_dir, lines)
    rep = _verify(b)
    assert not rep.ok
    assert rep.first_bad_index == k + 1 and rep.first_bad_kind == "decision"
    assert rep.failures[0].code == "chain.prev"


def test_deleted_record_is_detected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    lines = read_lines(b.run_dir)
    del lines[3]
    write_lines(b.run_dir, lines)
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == 3
    assert rep.failures[0].code == "chain.index"


def test_two_swapped_records_are_detected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    lines = read_lines(b.run_dir)
    lines[3], lines[4] = lines[4], lines[3]
    write_lines(b.run_dir, lines)
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == 3 and rep.first_bad_kind == "step.end"


def test_inserted_record_with_valid_looking_hash_and_prev_is_detected(tmp_path: Path) -> None:
    """A forger inserts a record and re-chains everything after it: the signed roots catch it."""
    b = _valid(tmp_path)
    recs = records(b.run_dir)
    end = _index_of(recs, "run.end")
    fake = {**recs[end - 1], "status": "error", "message": "forged"}
    recs.insert(end, fake)
    write_lines(b.run_dir, _rechain(recs))
    rep = _verify(b)
    assert not rep.ok
    assert rep.first_bad_kind == "checkpoint" and rep.first_bad_index == end + 2


def test_rechained_edit_of_a_signed_record_is_detected(tmp_path: Path) -> None:
    """Rewriting a step's outcome and recomputing every prev still breaks the signed root."""
    b = _valid(tmp_path)
    recs = records(b.run_dir)
    end = _index_of(recs, "step.end")
    recs[end] = {**recs[end], "status": "error"}
    write_lines(b.run_dir, _rechain(recs))
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index is not None and rep.first_bad_index <= end + 10


def test_tail_truncated_is_detected_against_the_signed_checkpoint(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    lines = read_lines(b.run_dir)
    write_lines(b.run_dir, lines[:-3])
    rep = _verify(b)
    assert not rep.ok
    assert rep.first_bad_index == len(lines) - 3
    assert rep.failures[0].code == "ledger.truncated"


def test_checkpoint_resigned_with_another_key_is_rejected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    attacker = SigningKey.generate()
    recs = records(b.run_dir)
    forged = sign_checkpoint(f"tenure.local/{b.run_id}", len(recs), bytes(32), attacker)
    (b.run_dir / "checkpoint").write_text(forged)
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_kind == "checkpoint file"
    assert rep.failures[0].code == "checkpoint.signature"


def test_whole_run_resigned_with_another_key_fails_under_the_real_key(tmp_path: Path) -> None:
    """Swapping tenure.pub and re-signing everything only fools someone who trusts the copy."""
    b = _valid(tmp_path)
    forged = build_run(tmp_path / "forge", 5, key=SigningKey.generate(), witness=False)
    shutil.rmtree(b.run_dir)
    shutil.copytree(forged.run_dir, b.run_dir)
    shutil.rmtree(tmp_path / ".witness")
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == 0 and rep.first_bad_kind == "run.start"
    assert rep.failures[0].code == "key.mismatch"
    copy_rep = verify_run(b.run_dir)  # trusting the copy accepts the forgery, loudly
    assert copy_rep.ok and copy_rep.key_source == "run-directory copy"
    assert "key.run_copy" in copy_rep.codes


def test_checkpoint_record_note_resigned_with_another_key_is_rejected(tmp_path: Path) -> None:
    b = _valid(tmp_path, config=LedgerConfig(checkpoint_every=5, checkpoint_interval=0))
    recs = records(b.run_dir)
    k = _index_of(recs, "checkpoint")
    attacker = SigningKey.generate()
    recs[k]["note"] = sign_checkpoint(
        f"tenure.local/{b.run_id}", k, bytes.fromhex(recs[k]["root"]), attacker
    )
    lines = read_lines(b.run_dir)
    lines[k] = record_bytes(recs[k]) + b"\n"
    write_lines(b.run_dir, lines)
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == k and rep.first_bad_kind == "checkpoint"


def test_step_start_without_an_allow_decision_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.step()
    d = b.decision("s9", "L0", effect="deny")
    bad = b.step_start("s9", "L0", d)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.first_bad_kind == "step.start"
    assert rep.failures[0].code == "step.decision"


def test_step_start_referencing_no_decision_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    bad = b.step_start("s1", "L0", -1)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad


def test_decision_for_another_target_does_not_authorize_a_step(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    d = b.decision("s1", "L0", target="search")
    bad = b.step_start("s1", "L0", d, target="pay")
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad


def test_one_decision_cannot_authorize_two_steps(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    d = b.decision("s1", "L0")
    b.step_start("s1", "L0", d)
    bad = b.step_start("s1", "L0", d)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad


def test_require_approval_without_a_granted_approval_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    d = b.decision("s1", "L0", effect="require_approval")
    bad = b.step_start("s1", "L0", d, approval=-1)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad
    assert rep.failures[0].code == "step.approval"


def test_step_under_a_revoked_lease_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.step()
    b.revoke("L0")
    d = b.decision("s2", "L0")
    bad = b.step_start("s2", "L0", d)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.first_bad_kind == "step.start"
    assert rep.failures[0].code == "step.revoked"


def test_step_under_a_child_of_a_revoked_lease_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.issue("L1", parent="L0")
    b.revoke("L0")  # no cascade list: the verifier still walks the ancestry
    d = b.decision("s1", "L1")
    bad = b.step_start("s1", "L1", d)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.failures[0].code == "step.revoked"


def test_step_under_an_expired_lease_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0", exp=now_us() - 10_000_000)  # expired 10 s ago, beyond the 2 s tolerance
    d = b.decision("s1", "L0")
    bad = b.step_start("s1", "L0", d)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.failures[0].code == "step.expired"


def test_step_under_a_lease_never_issued_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    d = b.decision("s1", "ghost")
    bad = b.step_start("s1", "ghost", d)
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.failures[0].code == "step.lease"


def test_lease_signed_by_another_key_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    attacker = SigningKey.generate()
    claims = {
        "lid": "L0",
        "run": b.run_id,
        "exp": b.deadline,
        "scopes": ["web:read"],
        "parent": None,
    }
    env = sign_envelope(attacker, "application/vnd.tenure.lease.v1+json", canonical(claims))
    bad = b.ledger.append(
        "lease.issued",
        {
            "lease": "L0",
            "parent": "",
            "subject": "agent:x",
            "scopes": ["web:read"],
            "exp": b.deadline,
            "envelope": env,
        },
    )
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.first_bad_kind == "lease.issued"


def test_child_lease_widening_its_parent_is_rejected(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    bad = b.issue("L1", parent="L0", scopes=["web:read", "payments"])
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == bad and rep.failures[0].code == "lease.widens"


def test_torn_final_line_at_every_offset_is_never_silently_accepted(tmp_path: Path) -> None:
    """A crash mid-write leaves a prefix of the last record: reported as torn, or a failure."""
    # A crashed run (never closed): a checkpoint, then a few unsigned records.
    b = RunBuilder(tmp_path, config=LedgerConfig(checkpoint_every=6, checkpoint_interval=0))
    b.issue("L0")
    b.step()
    b.step()
    b.ledger.flush()
    original = read_lines(b.run_dir)
    last = original[-1]
    keep = sum(map(len, original[:-1]))
    for cut in range(len(last) - 1, 0, -1):
        os.truncate(b.run_dir / "ledger.jsonl", keep + cut)  # a crash cut the last write
        rep = _verify(b)
        assert rep.torn_tail and rep.records == len(original) - 1, cut
        # Everything durable before the torn line still verifies, but the run is incomplete.
        assert rep.verdict == "incomplete" and not rep.failures
        assert "ledger.torn_tail" in rep.codes
    # The same cut in a closed run follows its signed run.end: no crash does that, a failure.
    c = _valid(tmp_path / "closed")
    closed = read_lines(c.run_dir)
    keep = sum(map(len, closed[:-1]))
    for cut in range(len(closed[-1]) - 1, 0, -1):
        os.truncate(c.run_dir / "ledger.jsonl", keep + cut)
        rep = _verify(c)
        assert rep.torn_tail and rep.failures[0].code == "run.after_end", cut
        assert rep.first_bad_index == len(closed) - 1


def test_torn_tail_does_not_hide_earlier_tampering(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path, config=LedgerConfig(checkpoint_every=100, checkpoint_interval=0))
    b.issue("L0")
    b.step()
    b.step()
    b.ledger.flush()
    lines = read_lines(b.run_dir)
    lines[2] = lines[2].replace(b'"allow"', b'"deny!"')
    lines[-1] = lines[-1][:10]
    write_lines(b.run_dir, lines)
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == 3


def test_closing_checkpoint_respelled_in_every_copy_is_detected(tmp_path: Path) -> None:
    """The closing checkpoint record is covered by no signature but its own note: an
    attacker re-spelling the note's base64 signature (same decoded bytes) in the record, the
    checkpoint file and the witness copy changes bytes nobody signed. Detected."""
    b = _valid(tmp_path, steps=1)
    lines = read_lines(b.run_dir)
    closing = json.loads(lines[-1])
    note = closing["note"]
    head, sig = note.rstrip("\n").rsplit(" ", 1)
    raw = base64.b64decode(sig)
    # Another spelling of the same bytes: set an unused low bit of the last character.
    pad = sig.count("=")
    assert pad, "a 68-byte signature blob always ends in padding"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sig[-pad - 1]
    respelled = sig[: -pad - 1] + alphabet[alphabet.index(last) | 1] + "=" * pad
    assert respelled != sig and base64.b64decode(respelled) == raw
    forged = f"{head} {respelled}\n"
    lines[-1] = record_bytes({**closing, "note": forged}) + b"\n"
    write_lines(b.run_dir, lines)
    (b.run_dir / "checkpoint").write_text(forged)
    (tmp_path / ".witness" / f"{b.run_id}.checkpoint").write_text(forged)
    rep = _verify(b)
    assert not rep.ok and rep.failures[0].code == "checkpoint.signature"
    assert "canonical base64" in rep.failures[0].message
    assert rep.first_bad_index == len(lines) - 1


def test_every_flipped_byte_of_a_small_ledger_is_detected_and_named(tmp_path: Path) -> None:
    b = _valid(tmp_path, steps=1, witness=False, attestation=False)
    data = (b.run_dir / "ledger.jsonl").read_bytes()
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    fd = os.open(b.run_dir / "ledger.jsonl", os.O_RDWR)  # flip in place: no truncation
    try:
        for pos in range(len(data)):
            for mask in (0x01, 0x80) if pos % 13 == 0 else (0x01,):
                os.pwrite(fd, bytes([data[pos] ^ mask]), pos)
                rep = _verify(b)
                os.pwrite(fd, data[pos : pos + 1], pos)
                assert not rep.ok, (pos, mask)
                k = max(i for i, s in enumerate(starts) if s <= pos)
                assert rep.first_bad_index is not None and rep.first_bad_index <= k + 1, (pos, rep)
    finally:
        os.close(fd)
    (b.run_dir / "ledger.jsonl").write_bytes(data)
    assert _verify(b).ok


def test_rollback_to_an_older_consistent_prefix_is_detected_via_the_witness(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path, config=LedgerConfig(checkpoint_every=5, checkpoint_interval=0))
    b.issue("L0")
    b.step()
    b.ledger.checkpoint()
    snapshot = tmp_path / "snapshot"
    shutil.copytree(b.run_dir, snapshot)  # a consistent, signed older state
    b.step()
    b.step()
    b.end()
    assert _verify(b).ok
    shutil.rmtree(b.run_dir)
    shutil.copytree(snapshot, b.run_dir)
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_kind == "witness checkpoint"
    assert rep.failures[0].code == "witness.rollback"
    # Without the witness the older prefix is internally consistent: only a warning says so.
    shutil.rmtree(tmp_path / ".witness")
    rep = _verify(b)
    assert rep.verdict == "incomplete" and "witness.missing" in rep.codes


def test_deleted_checkpoint_file_is_detected_via_the_witness(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    (b.run_dir / "checkpoint").unlink()
    rep = _verify(b)
    assert not rep.ok and rep.failures[0].code == "witness.rollback"


def test_witness_split_view_is_detected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    n = len(read_lines(b.run_dir)) - 1  # the size the closing checkpoint signs
    other = sign_checkpoint(f"tenure.local/{b.run_id}", n, bytes(32), b.key)
    (tmp_path / ".witness" / f"{b.run_id}.checkpoint").write_text(other)
    rep = _verify(b)
    assert not rep.ok and rep.failures[0].code == "witness.split_view"


def test_records_appended_after_run_end_are_rejected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    recs = records(b.run_dir)
    recs.append({**recs[4], "step": "late"})
    write_lines(b.run_dir, _rechain(recs))
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == len(recs) - 1
    assert rep.failures[0].code == "run.after_end"


def test_forged_run_end_in_an_unsigned_tail_is_rejected(tmp_path: Path) -> None:
    """A crashed run's unsigned tail cannot be 'completed' by appending a run.end."""
    b = RunBuilder(tmp_path, witness=False)
    b.issue("L0")
    b.step()
    b.ledger.checkpoint()
    b.step()
    b.ledger.flush()
    recs = records(b.run_dir)
    recs.append(
        {
            "i": 0,
            "t": now_us(),
            "kind": "run.end",
            "prev": "",
            "trace": "",
            "span": "",
            "status": "ok",
            "error": "",
            "check": "",
            "reason": "",
            "result": "",
        }
    )
    write_lines(b.run_dir, _rechain(recs))
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_kind == "run.end"
    assert rep.failures[0].code == "run.end"


def test_attestation_payload_swapped_is_rejected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [],
        "predicateType": "x",
        "predicate": {"python": "evil"},
    }
    env = sign_envelope(b.key, INTOTO_PAYLOAD_TYPE, canonical(statement))
    (b.run_dir / "attestation.intoto.json").write_text(json.dumps(env))
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == 0 and rep.failures[0].code == "attestation.digest"


def test_attestation_signed_by_another_key_is_rejected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    env = json.loads((b.run_dir / "attestation.intoto.json").read_text())
    payload = __import__("base64").b64decode(env["payload"])
    forged = sign_envelope(SigningKey.generate(), INTOTO_PAYLOAD_TYPE, payload)
    (b.run_dir / "attestation.intoto.json").write_text(json.dumps(forged))
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_kind == "attestation.intoto.json"


def test_deleted_attestation_is_rejected(tmp_path: Path) -> None:
    b = _valid(tmp_path)
    (b.run_dir / "attestation.intoto.json").unlink()
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_kind == "run.start"
    assert rep.failures[0].code == "attestation.missing"


@pytest.mark.parametrize("first", ["decision", "checkpoint"])
def test_ledger_not_starting_with_run_start_is_rejected(tmp_path: Path, first: str) -> None:
    b = _valid(tmp_path)
    recs = records(b.run_dir)
    recs[0] = {**recs[0], "kind": first}
    write_lines(b.run_dir, _rechain(recs))
    rep = _verify(b)
    assert not rep.ok and rep.first_bad_index == 0

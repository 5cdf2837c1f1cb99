"""Attacks on the verifier and ``tenure trace`` through the evidence they are handed.

Each test is named after the attack. Each asserts the attack is rejected (a coded failure,
or one line naming file, line and field with exit code 1) and that trusted state — the
other runs' evidence and the witness copies — is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.crypto import canonical, sign_envelope
from tenure.evidence import LEASE_PAYLOAD_TYPE, verify_run
from tests.support.demo_runs import DemoRuns
from tests.support.run_builder import RunBuilder, build_run, read_lines, write_lines


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` (the state an attack must not change)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --- binding: one run's evidence passed off as another's ----------------------------------


def test_run_directory_replaced_by_a_copy_of_another_runs_evidence_is_rejected(
    tmp_path: Path,
) -> None:
    a = build_run(tmp_path, 3, run_id="run_a")
    b = build_run(tmp_path, 3, run_id="run_b", key=a.key)
    assert verify_run(b.run_dir, a.key.public_key).ok
    shutil.rmtree(b.run_dir)
    shutil.copytree(a.run_dir, b.run_dir)
    trusted = _fingerprint(tmp_path / ".witness") | _fingerprint(a.run_dir)

    rep = verify_run(b.run_dir, a.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "run.binding"
    assert "'run_a'" in rep.failures[0].message and "'run_b'" in rep.failures[0].message
    pub = tmp_path / "key.pub"
    pub.write_bytes(a.key.public_pem)
    code, _, err = _cli("verify", str(b.run_dir), "--key", str(pub))
    assert code == 1 and "[run.binding]" in err
    # Asked about run A explicitly, the same bytes are what they are: run A's evidence.
    assert verify_run(b.run_dir, a.key.public_key, expect_run_id="run_a").ok
    assert verify_run(a.run_dir, a.key.public_key).ok
    assert _fingerprint(tmp_path / ".witness") | _fingerprint(a.run_dir) == trusted


def test_evidence_claiming_another_run_id_than_expected_is_rejected(tmp_path: Path) -> None:
    b = build_run(tmp_path, 2)
    rep = verify_run(b.run_dir, b.key.public_key, expect_run_id="run_other")
    assert rep.verdict == "invalid" and rep.failures[0].code == "run.binding"


# --- completeness: evidence without a signed end ------------------------------------------


def test_ledger_cut_short_with_its_checkpoint_deleted_is_incomplete_not_verified(
    tmp_path: Path,
) -> None:
    b = build_run(tmp_path, 4)
    pub = tmp_path / "key.pub"
    pub.write_bytes(b.key.public_pem)
    write_lines(b.run_dir, read_lines(b.run_dir)[:3])
    (b.run_dir / "checkpoint").unlink()
    witness = tmp_path / ".witness" / f"{b.run_id}.checkpoint"
    saved = witness.read_bytes()

    # With the witness there, the cut is a rollback: invalid.
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "witness.rollback"
    assert witness.read_bytes() == saved  # the verifier never rewrites the witness
    # Without it, nothing proves the cut, but nothing proves an end either: incomplete.
    witness.unlink()
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "incomplete" and not rep.ok and not rep.failures
    assert "run.no_end" in rep.codes
    code, out, err = _cli("verify", str(b.run_dir), "--key", str(pub))
    assert code == 3 and "INCOMPLETE" in err and "verified" not in out
    code, _, _ = _cli("verify", str(b.run_dir), "--key", str(pub), "--allow-incomplete")
    assert code == 0


def test_only_a_signed_run_end_is_verified(tmp_path: Path) -> None:
    b = build_run(tmp_path, 2)
    pub = tmp_path / "key.pub"
    pub.write_bytes(b.key.public_pem)
    code, out, _ = _cli("verify", str(b.run_dir), "--key", str(pub))
    assert code == 0 and "verified" in out


# --- hostile files --------------------------------------------------------------------------


def _closed_run(tmp_path: Path) -> RunBuilder:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.step()
    b.end()
    return b


def _replace_line(b: RunBuilder, n: int, line: bytes) -> None:
    lines = read_lines(b.run_dir)
    lines[n] = line + b"\n"
    write_lines(b.run_dir, lines)


HOSTILE_LINES = {
    "deeply nested JSON": b'{"kind":"usage","t":1,"i":2,"x":' + b"[" * 10**5 + b"]" * 10**5 + b"}",
    "wrong-typed decision index": b'{"kind":"step.start","t":1,"i":2,"step":"1","lease":"L0",'
    b'"action":"execute_tool","target":"search","decision":"first"}',
    "wrong-typed cascade": b'{"kind":"lease.revoked","t":1,"i":2,"lease":"L0","cascade":5}',
    "wrong-typed checkpoint size": b'{"kind":"checkpoint","t":1,"i":2,"size":"2","root":"",'
    b'"note":""}',
    "wrong-typed steps.stopped": b'{"kind":"steps.stopped","t":1,"i":2,"steps":{"a":1},'
    b'"ended":[1]}',
    "string timestamp": b'{"kind":"usage","t":"noon","i":2}',
    "a list, not an object": b"[1, 2, 3]",
    "kind missing": b'{"t":1,"i":2}',
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_LINES))
def test_hostile_record_is_one_line_naming_file_and_line_for_verify_and_trace(
    tmp_path: Path, attack: str
) -> None:
    b = _closed_run(tmp_path)
    _replace_line(b, 2, HOSTILE_LINES[attack])
    trusted = _fingerprint(tmp_path / ".witness")
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid"
    assert rep.failures[0].code in ("record.field", "record.malformed", "chain.prev")
    code, _, err = _cli("trace", str(b.run_dir))
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{b.run_dir / 'ledger.jsonl'}:3" in err
    assert _fingerprint(tmp_path / ".witness") == trusted


def test_ledger_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    ledger = b.run_dir / "ledger.jsonl"
    ledger.unlink()
    os.mkfifo(ledger)
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "evidence.unreadable"
    assert "FIFO" in rep.failures[0].message
    code, _, err = _cli("trace", str(b.run_dir))
    assert code == 1 and "FIFO" in err and err.count("\n") == 1


def test_checkpoint_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    (b.run_dir / "checkpoint").unlink()
    os.mkfifo(b.run_dir / "checkpoint")
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "evidence.unreadable"


def test_ledger_linked_to_dev_zero_is_refused(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    ledger = b.run_dir / "ledger.jsonl"
    ledger.unlink()
    ledger.symlink_to("/dev/zero")
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and "character device" in rep.failures[0].message
    code, _, err = _cli("trace", str(b.run_dir))
    assert code == 1 and "character device" in err


def test_public_key_copy_linked_to_dev_zero_is_refused(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    (b.run_dir / "tenure.pub").unlink()
    (b.run_dir / "tenure.pub").symlink_to("/dev/zero")
    rep = verify_run(b.run_dir)
    assert rep.verdict == "invalid" and rep.failures[0].code == "key.invalid"


def test_huge_sparse_ledger_is_refused_at_its_first_line(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    ledger = b.run_dir / "ledger.jsonl"
    with ledger.open("r+b") as f:
        f.truncate(64 << 30)  # 64 GiB of holes after the real records: never read whole
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "evidence.too_large"
    code, _, err = _cli("trace", str(b.run_dir))
    assert code == 1 and "longer than" in err


def test_deeply_nested_attestation_file_is_refused(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    (b.run_dir / "attestation.intoto.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "attestation.envelope"
    assert "nested deeper" in rep.failures[0].message


def test_witness_replaced_by_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    b = _closed_run(tmp_path)
    witness = tmp_path / ".witness" / f"{b.run_id}.checkpoint"
    witness.unlink()
    os.mkfifo(witness)
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "evidence.unreadable"


def test_real_demo_runs_verify_and_trace(demo_runs: DemoRuns, tmp_path: Path) -> None:
    runs = demo_runs.copy_to(tmp_path)
    for run in (runs.research, runs.revoked):
        assert verify_run(run, runs.public_key).ok
        code, _, err = _cli("trace", str(run))
        assert code == 0, err


def test_escape_sequences_in_evidence_never_reach_the_terminal(tmp_path: Path) -> None:
    """The attack: a signed lease whose id carries ``ESC[1A ESC[2K`` and a newline (and a
    bad ``exp``, so the verifier names the id in its failure), that ``tenure verify``
    would print raw: erasing its own INVALID line and forging a verdict. Every untrusted
    field is printed as one printable line."""
    b = RunBuilder(tmp_path)
    forged = "L1\x1b[1A\x1b[2K\nverified"
    claims: dict[str, object] = {
        "lid": forged,
        "run": b.run_id,
        "exp": "later",
        "scopes": [],
        "parent": None,
    }
    env = sign_envelope(b.key, LEASE_PAYLOAD_TYPE, canonical(claims))
    b.ledger.append(
        "lease.issued",
        {
            "lease": forged,
            "parent": "",
            "subject": "agent:x",
            "scopes": [],
            "exp": 1,
            "envelope": env,
        },
    )
    b.end()
    pub = tmp_path / "key.pub"
    pub.write_bytes(b.key.public_pem)
    code, out, err = _cli("verify", str(b.run_dir), "--key", str(pub))
    assert code == 1 and "INVALID" in err
    assert "\x1b" not in out + err
    assert "lease L1\\x1b[1A\\x1b[2K\\x0averified: signed exp 'later'" in err

"""Verifying honest runs: what is reported, which key was trusted, and the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from tenure.cli._verify import register
from tenure.crypto import SigningKey, public_key_pem
from tenure.evidence import CLOCK_SKEW_US, verify_run
from tenure.evidence._ledger_io import LedgerConfig
from tests.support.run_builder import (
    RunBuilder,
    build_run,
    lease_envelope,
    now_us,
    read_lines,
    write_lines,
)


def test_honest_run_verifies_with_the_given_key(tmp_path: Path) -> None:
    b = build_run(tmp_path, steps=4)
    rep = verify_run(b.run_dir, b.key.public_key)
    n = len(read_lines(b.run_dir))
    assert rep.ok and rep.problem is None and rep.first_bad_index is None
    assert rep.key_source == "given" and rep.key_id == b.key.key_id
    # The final checkpoint record signs the n - 1 records before it; file and witness repeat it.
    assert (rep.records, rep.signed_size, rep.witness_size) == (n, n - 1, n - 1)
    assert rep.run_status == "ok" and rep.run_id == b.run_id
    assert rep.checkpoints == 1 and not rep.torn_tail
    assert rep.warnings == []
    assert json.loads(rep.to_json())["ok"] is True


def test_trusting_the_run_directory_copy_warns(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    rep = verify_run(b.run_dir)
    assert rep.ok and rep.key_source == "run-directory copy"
    assert "key.run_copy" in rep.codes
    assert any("--key" in w.message for w in rep.warnings)


def test_no_key_at_all_fails(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    (b.run_dir / "tenure.pub").unlink()
    rep = verify_run(b.run_dir)
    assert not rep.ok and rep.failures[0].code == "key.missing"


def test_a_given_key_that_differs_from_the_copy_is_noted(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    (b.run_dir / "tenure.pub").write_bytes(public_key_pem(SigningKey.generate().public_key))
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.ok and "key.copy_differs" in rep.codes


def test_many_checkpoints_all_verify(tmp_path: Path) -> None:
    b = build_run(
        tmp_path, steps=40, config=LedgerConfig(checkpoint_every=7, checkpoint_interval=0)
    )
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.ok and rep.checkpoints >= 17


def test_crashed_run_verifies_with_an_unsigned_tail_warning(tmp_path: Path) -> None:
    """No run.end, records after the last checkpoint: durable evidence verifies, tail flagged."""
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.step()
    b.ledger.checkpoint()
    b.step()
    b.ledger.flush()  # kill -9 here: no close
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "incomplete" and not rep.failures and rep.run_status == "incomplete"
    assert "ledger.unsigned_tail" in rep.codes and "run.no_end" in rep.codes
    assert rep.signed_size == 5 and rep.records == 9


def test_crash_before_any_checkpoint_still_verifies_what_is_there(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path, witness=False)
    b.issue("L0")
    b.ledger.flush()
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "incomplete" and rep.signed_size == 0 and rep.records == 2
    assert "checkpoint.file_missing" in rep.codes


def test_approved_step_verifies(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    d = b.decision("s1", "L0", effect="require_approval")
    a = b.approval("s1")
    b.step_start("s1", "L0", d, approval=a)
    b.step_end("s1")
    b.end()
    assert verify_run(b.run_dir, b.key.public_key).ok


def test_delegated_child_lease_and_renewal_verify(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.issue("L1", parent="L0", exp=now_us() - 10 * CLOCK_SKEW_US)  # already expired...
    exp = now_us() + 60_000_000
    env = lease_envelope(b.key, "L1", b.run_id, exp, ["web:read"], "L0")
    b.ledger.append("lease.renewed", {"lease": "L1", "exp": exp, "envelope": env})
    b.step("L1")  # ...but renewed: valid
    b.end()
    assert verify_run(b.run_dir, b.key.public_key).ok


def test_expiry_tolerance_is_the_documented_skew(tmp_path: Path) -> None:
    """A step starting within CLOCK_SKEW_US after exp is accepted (clock skew), not later."""
    b = RunBuilder(tmp_path)
    b.issue("L0", exp=now_us() - CLOCK_SKEW_US // 4)
    b.step()
    b.end()
    assert verify_run(b.run_dir, b.key.public_key).ok


def test_missing_ledger_is_reported(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    (b.run_dir / "ledger.jsonl").unlink()
    rep = verify_run(b.run_dir, b.key.public_key)
    assert not rep.ok and rep.failures[0].code == "evidence.missing"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_verify_exit_0_names_the_key_and_says_verified(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    pub = tmp_path / "trusted.pub"
    pub.write_bytes(public_key_pem(b.key.public_key))
    result = CliRunner().invoke(_app(), ["verify", str(b.run_dir), "--key", str(pub)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and b.key.key_id in result.output
    assert "run status: ok" in result.output


def test_cli_verify_warns_loudly_on_the_run_directory_copy(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    result = CliRunner().invoke(_app(), ["verify", str(b.run_dir)])
    assert result.exit_code == 0
    assert "WARNING" in result.output and "--key" in result.output


def test_cli_verify_exit_1_names_the_first_bad_record(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    lines = read_lines(b.run_dir)
    del lines[3]
    write_lines(b.run_dir, lines)
    result = CliRunner().invoke(_app(), ["verify", str(b.run_dir)])
    assert result.exit_code == 1
    assert "record 3 (step.end): index out of order" in result.output


def test_cli_verify_json(tmp_path: Path) -> None:
    b = build_run(tmp_path)
    result = CliRunner().invoke(_app(), ["verify", str(b.run_dir), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["key_source"] == "run-directory copy"


def test_cli_verify_exit_2_on_usage_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["verify", str(tmp_path / "nope")])
    assert result.exit_code == 2
    b = build_run(tmp_path)
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    result = CliRunner().invoke(_app(), ["verify", str(b.run_dir), "--key", str(bad_key)])
    assert result.exit_code == 2


def test_every_code_a_report_carries_is_declared(tmp_path: Path) -> None:
    """Codes are the stable interface: each one the verifier emits is listed in CODES."""
    import re

    from tenure.evidence import CODES

    source = "".join(
        p.read_text() for p in (Path(__file__).parents[2] / "tenure" / "evidence").glob("*.py")
    )
    emitted = set(re.findall(r'(?:Fail|Finding)\(\s*"([a-z_.]+)"', source))
    assert emitted and emitted <= set(CODES), emitted - set(CODES)

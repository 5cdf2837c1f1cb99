"""``tenure demo``: the flagship shows a denial, an approval and a revocation, and verifies.

The demo's exit code is its own test: 0 only when run 1 ended ok with one denial and one
approval, run 2 was revoked and stopped with LeaseRevoked, and both runs' evidence verified
against the runtime's public key (the key directory's ``tenure.pub``, not the run copy).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.crypto import default_key_dir
from tenure.evidence import verify_run
from tenure.policies import default_policy_path


def _demo(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["demo", *args], catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def test_demo_shows_denial_approval_revocation_and_verifies_both_runs(tmp_path: Path) -> None:
    code, out = _demo("--evidence-dir", str(tmp_path / "runs"))
    assert code == 0, out
    # the denial, caught by the writer, which goes on
    assert "✖ DENY tool shell_exec  [rule no-shell-or-delete]" in out
    assert "caught PolicyDenied (rule:no-shell-or-delete)" in out
    # the approval, granted by the simulated approver before the payment ran
    assert "⏸ HOLD tool pay_invoice  [rule payments-need-approval]" in out
    assert "✔ APPROVED request apr_" in out and "(by finance-lead, key " in out
    assert "paid for the cover image" in out
    # the revocation, mid-flight, fail closed
    assert "operator   rt.revoke(" in out
    assert "REVOKED" in out
    assert "■ run stopped fail closed: LeaseRevoked check=lease.revoked" in out
    # verification per run, against the key directory's public key
    run_ids = re.findall(r"^(?:research|revoked)\s+(run_[0-9a-f]{16})  verified ", out, re.M)
    assert len(run_ids) == 2 and len(set(run_ids)) == 2
    pub = default_key_dir() / "tenure.pub"
    assert f"(trusted key: {pub})" in out
    for run_id in run_ids:
        assert f"tenure verify {tmp_path / 'runs' / run_id} --key {pub}" in out
        assert f"tenure trace {tmp_path / 'runs' / run_id}" in out
    assert "Demo complete" in out


def test_demo_evidence_verifies_independently_with_the_expected_outcomes(
    tmp_path: Path,
) -> None:
    from tenure.crypto import load_public_key

    code, out = _demo("--evidence-dir", str(tmp_path / "runs"))
    assert code == 0, out
    key = load_public_key(default_key_dir() / "tenure.pub")
    statuses = sorted(verify_run(d, key).run_status for d in (tmp_path / "runs").glob("run_*"))
    assert statuses == ["ok", "violation"]
    for d in (tmp_path / "runs").glob("run_*"):
        rep = verify_run(d, key)
        assert rep.ok and rep.key_source == "given", rep.failure_line()


def test_demo_exits_1_when_a_promised_behaviour_does_not_happen(tmp_path: Path) -> None:
    """With a policy that allows shell_exec, run 1 is not what the demo promises: exit 1."""
    text = default_policy_path().read_text(encoding="utf-8")
    lax = tmp_path / "lax.toml"
    lax.write_text(
        text.replace('targets = ["shell*", "delete_*"]', 'targets = ["delete_*"]'), encoding="utf-8"
    )
    code, out = _demo("--evidence-dir", str(tmp_path / "runs"), "--policy", str(lax))
    assert code == 1, out
    assert "unexpected: run 1 failed: RuntimeError" in out
    assert "Demo complete" not in out


def test_demo_with_an_invalid_policy_is_a_one_line_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 2\ndefault = "deny"\n', encoding="utf-8")
    code, out = _demo("--evidence-dir", str(tmp_path / "runs"), "--policy", str(bad))
    assert code == 2
    assert out.startswith(f"error: policy {bad}:1: ") and out.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_demo_output_has_no_control_codes_when_stdout_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    code, out = _demo("--evidence-dir", str(tmp_path / "runs"))
    assert code == 0
    assert "\x1b[" not in out


def test_the_commands_the_demo_prints_work_as_printed(tmp_path: Path) -> None:
    """As after `make demo`: `tenure` is not on the PATH, the printed commands still run."""
    import os
    import shlex
    import subprocess
    import sys

    env = {**os.environ, "PATH": "/usr/bin:/bin", "TENURE_KEY_DIR": str(tmp_path / "keys")}
    demo = subprocess.run(
        [sys.executable, "-m", "tenure", "demo", "--evidence-dir", "runs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    deeper = demo.stdout.split("Look deeper", 1)[1]
    commands = [line.strip() for line in deeper.splitlines() if line.startswith("  ")]
    assert len(commands) == 6 and "is not on your PATH" in deeper
    for command in commands:
        done = subprocess.run(
            shlex.split(command),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert len(list(tmp_path.glob("run_*.html"))) == 2

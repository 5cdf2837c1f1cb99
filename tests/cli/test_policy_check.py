"""`tenure policy check`: a summary and exit 0, or one `file:line: reason` and exit 1."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from tenure.cli._policy import policy_check, register
from tenure.policies import PolicySet, default_policy_path


def test_check_of_the_default_policy_summarizes_rules_budgets_and_digest() -> None:
    code, text = policy_check(default_policy_path())
    assert code == 0
    ps = PolicySet.default()
    for rule in ps.rules:
        assert rule.id in text
    assert "require_approval" in text
    assert "max_steps" in text and "10000" in text
    assert f"digest: {ps.digest}" in text


def test_check_of_a_bad_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('version = 1\n[[rules]]\nid = "x"\neffect = "permit"\n')
    code, text = policy_check(bad)
    assert code == 1
    assert text == (
        f"{bad}:4: rule 'x': unknown effect 'permit' "
        "(expected 'allow', 'deny' or 'require_approval')"
    )


def test_check_shows_rate_limits_and_conditions(tmp_path: Path) -> None:
    good = tmp_path / "p.toml"
    good.write_text(
        'version = 1\n[[rules]]\nid = "big-pay"\neffect = "require_approval"\n'
        'when = { "args.amount" = { gt = 1000 } }\n[rate_limits]\nsearch = "20/s"\n'
    )
    code, text = policy_check(good)
    assert code == 0
    assert "args.amount gt 1000" in text
    assert "20/s" in text


def test_registered_cli_command_exits_with_the_check_code(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Root."""

    register(app)
    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "check", str(default_policy_path())])
    assert ok.exit_code == 0, ok.output
    assert "digest: sha256:" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 3\n")
    fail = runner.invoke(app, ["policy", "check", str(bad)])
    assert fail.exit_code == 1
    assert f"{bad}:1: version: expected 1, got 3" in fail.output

"""``tenure keys generate``: creates a key pair, never overwrites one silently."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tenure.cli._keys import register
from tenure.crypto import load_public_key, load_signing_key


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """tenure (test root)."""

    register(root)
    return root


def test_generate_creates_private_key_0600_and_prints_id_and_paths(
    app: typer.Typer, tmp_path: Path
) -> None:
    d = tmp_path / "keys"
    result = CliRunner().invoke(app, ["keys", "generate", "--dir", str(d)])
    assert result.exit_code == 0, result.output
    key = load_signing_key(d / "tenure.key", create=False)
    assert stat.S_IMODE((d / "tenure.key").stat().st_mode) == 0o600
    assert load_public_key(d / "tenure.pub") == key.public_key
    assert f"key id:      {key.key_id}" in result.output
    assert str(d / "tenure.key") in result.output and str(d / "tenure.pub") in result.output


def test_generate_refuses_to_overwrite_an_existing_key(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["keys", "generate", "--dir", str(tmp_path)]).exit_code == 0
    before = (tmp_path / "tenure.key").read_bytes()
    result = runner.invoke(app, ["keys", "generate", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "already exists; refusing to overwrite it (use --force)" in result.output
    assert (tmp_path / "tenure.key").read_bytes() == before


def test_generate_with_force_replaces_the_key(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["keys", "generate", "--dir", str(tmp_path)])
    old = load_signing_key(tmp_path / "tenure.key", create=False).key_id
    result = runner.invoke(app, ["keys", "generate", "--dir", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    new = load_signing_key(tmp_path / "tenure.key", create=False).key_id
    assert new != old and new in result.output


def test_generate_defaults_to_the_key_directory(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENURE_KEY_DIR", str(tmp_path / "default"))
    result = CliRunner().invoke(app, ["keys", "generate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "default" / "tenure.key").is_file()


def test_unwritable_directory_is_one_line_error(app: typer.Typer, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["keys", "generate", "--dir", str(blocker / "keys")])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot write the key pair to")
    assert result.output.count("\n") == 1

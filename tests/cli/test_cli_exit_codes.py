"""Every command's usage errors are one line and exit code 2; no traceback anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.crypto import generate_key_files, key_id_of, load_public_key


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["trace", "{missing}"], "no such run directory or ledger file"),
        (["policy", "check", "{missing}"], "no such policy file or folder"),
        (["verify", "{missing}"], "no such run directory or bundle"),
        (["report", "{missing}"], "no such run directory"),
        (["prove", "{missing}", "--record", "0"], "no such run directory"),
        (["export", "{missing}", "--out", "{tmp}/b"], "no such run directory"),
        (["runs", "{missing}"], "no such evidence directory"),
        (["revoke", "run_x", "--reason", "r", "--evidence-dir", "{missing}"], "no such evidence"),
        (["verify", "{tmp}"], "is not a run directory"),
    ],
)
def test_a_missing_file_or_folder_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str], message: str
) -> None:
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in command]
    code, _, err = _cli(*args)
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "missing").exists()


def test_keys_show_prints_the_key_id_paths_and_public_key(tmp_path: Path) -> None:
    key = generate_key_files(tmp_path / "k")
    code, out, _ = _cli("keys", "show", "--dir", str(tmp_path / "k"))
    assert code == 0
    assert f"key id:      {key.key_id}" in out
    assert f"public key:  {tmp_path / 'k' / 'tenure.pub'}" in out
    assert "-----BEGIN PUBLIC KEY-----" in out
    assert key_id_of(load_public_key(tmp_path / "k" / "tenure.pub")) == key.key_id


def test_keys_show_without_a_key_says_how_to_make_one_and_creates_nothing(
    tmp_path: Path,
) -> None:
    code, _, err = _cli("keys", "show", "--dir", str(tmp_path / "none"))
    assert code == 1 and "tenure keys generate" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()

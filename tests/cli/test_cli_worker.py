"""``tenure worker``: what it is given is checked before it joins anything — each mistake
is one line naming the option and exit 2; a backend it cannot reach is one line and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app

UNREACHABLE = "postgresql://nobody:secret@127.0.0.1:1/x"


def _worker(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["worker", "--backend", UNREACHABLE, "--pool", "research", *args]
    )
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agents", "no_such_module_here"], "--agents no_such_module_here: cannot be imported"),
        (["--agents", "{tmp}/missing.py"], "missing.py: no such file"),
        (
            ["--agents", "tests.distributed.pool_agents", "--cert", "{tmp}/nope"],
            "cannot read --cert",
        ),
        (
            ["--agents", "tests.distributed.pool_agents", "--operator-key", "{tmp}/op.pub"],
            "--operator-key: ",
        ),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "op.pub").write_text("not a key\n")
    code, err = _worker(*(a.format(tmp=tmp_path) for a in args))
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_unreachable_backend_is_one_line_without_its_password_and_exit_1(
    tmp_path: Path,
) -> None:
    code, err = _worker(
        "--agents", "tests.distributed.pool_agents", "--evidence-dir", str(tmp_path / "runs")
    )
    assert code == 1, err
    assert "unreachable" in err and "secret" not in err and "Traceback" not in err

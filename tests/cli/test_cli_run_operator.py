"""``tenure run`` as an operator steers it: typed arguments, ``--json``, ``--traceback``,
``--quiet``, bad options, the live display under a pseudo-terminal, and Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.evidence import verify_run

USER_FILE = """
import anyio
from pydantic import BaseModel
from tenure import Context, agent, tool

class Invoice(BaseModel):
    vendor: str
    amount: int

@tool(scopes={"math"})
async def double(n: int) -> int:
    return 2 * n

@agent(scopes={"math"})
async def twice(ctx: Context, n: int) -> int:
    return await ctx.call(double, n)

@agent
async def pay(ctx: Context, invoice: Invoice) -> str:
    return f"{type(invoice).__name__} {invoice.vendor} {invoice.amount}"

@agent
async def broken(ctx: Context) -> None:
    values = {}
    values["missing"]

@agent(scopes={"math"})
async def busy(ctx: Context) -> None:
    for n in range(100000):
        await ctx.call(double, n)
        await anyio.sleep(0.01)
"""


@pytest.fixture(autouse=True)
def _restore_imports() -> Iterator[None]:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "ops.py"
    path.write_text(USER_FILE, encoding="utf-8")
    return path


def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["run", *args, "--evidence-dir", str(tmp_path / "runs")], catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def test_an_int_parameter_never_receives_a_word(tmp_path: Path, user_file: Path) -> None:
    code, out, err = _run(tmp_path, f"{user_file}:twice", "three", "-p", "alice", "-s", "math")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith('error: argument n="three" for agent twice(ctx, n: int): ')
    assert "valid integer" in err
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_a_pydantic_parameter_gets_the_model(tmp_path: Path, user_file: Path) -> None:
    code, out, _ = _run(
        tmp_path, f"{user_file}:pay", '{"vendor": "acme", "amount": 12}', "-p", "alice"
    )
    assert code == 0 and 'result: "Invoice acme 12"' in out
    code, _, err = _run(tmp_path, f"{user_file}:pay", '{"vendor": "acme"}', "-p", "alice")
    assert code == 2 and "Field required" in err


def test_json_prints_the_outcome_and_the_verdict(tmp_path: Path, user_file: Path) -> None:
    code, out, _ = _run(
        tmp_path, f"{user_file}:twice", "21", "-p", "alice", "-s", "math", "--json", "--quiet"
    )
    assert code == 0
    outcome = json.loads(out)
    assert outcome["status"] == "ok" and outcome["result"] == 42
    assert outcome["verdict"] == "verified" and outcome["run_id"].startswith("run_")
    assert Path(outcome["evidence"]).name == outcome["run_id"]


def test_traceback_shows_the_agents_own_frame(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:broken", "-p", "alice", "--quiet", "--traceback")
    assert code == 3
    assert f'File "{user_file}", line ' in err and 'values["missing"]' in err
    assert "KeyError: 'missing'" in err
    assert "tenure/runtime" not in err  # only the user's frames


def test_quiet_prints_no_start_lines(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:twice", "1", "-p", "alice", "-s", "math", "-q")
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--otlp", "localhost:4318"], "--otlp 'localhost:4318': expected an http:// or https://"),
        (["--otlp", "http://"], "--otlp 'http://': expected"),
    ],
)
def test_bad_options_are_one_line_exit_2(
    tmp_path: Path, user_file: Path, option: list[str], message: str
) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:twice", "1", "-p", "alice", *option)
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_an_evidence_dir_that_is_a_file_is_one_line_exit_2(tmp_path: Path, user_file: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = CliRunner().invoke(
        app, ["run", f"{user_file}:twice", "1", "-p", "alice", "--evidence-dir", str(afile)]
    )
    assert result.exit_code == 2
    assert result.stderr == f"error: --evidence-dir {afile}: exists and is not a directory\n"
    result = CliRunner().invoke(app, ["demo", "--evidence-dir", str(afile)])
    assert result.exit_code == 2 and "is not a directory" in result.stderr


def _tenure(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "tenure"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TENURE_KEY_DIR": str(tmp_path / "keys"),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_under_a_terminal_a_live_display_shows_steps_tools_and_agents(
    tmp_path: Path, user_file: Path
) -> None:
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [
            *_tenure(tmp_path),
            "run",
            f"{user_file}:busy",
            "-p",
            "alice",
            "-s",
            "math",
            "--evidence-dir",
            str(tmp_path / "runs"),
        ],
        stdin=sub,
        stdout=sub,
        stderr=sub,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    os.close(sub)
    try:
        screen = _read_until(main, b"agents: busy", 60)
        assert b" started; evidence: " in screen
        assert b"steps " in screen and b"tools " in screen and b"agents: busy" in screen
        proc.send_signal(signal.SIGINT)
        screen += _read_until(main, b"verify with:", 60)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    assert b"interrupted: run run_" in screen


def test_ctrl_c_stops_the_run_fail_closed_with_one_line_and_the_evidence_records_it(
    tmp_path: Path, user_file: Path
) -> None:
    proc = subprocess.Popen(
        [
            *_tenure(tmp_path),
            "run",
            f"{user_file}:busy",
            "-p",
            "alice",
            "-s",
            "math",
            "--evidence-dir",
            str(tmp_path / "runs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline().decode()
    assert " started; evidence: " in first
    run_dir = Path(first.rsplit("evidence: ", 1)[1].strip())
    deadline = time.monotonic() + 30
    while b'"step.start"' not in (run_dir / "ledger.jsonl").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"interrupted: run {run_dir.name} stopped fail closed (recorded as cancelled)" in (
        err.decode()
    )
    assert "Traceback" not in err.decode()
    records = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    ends = [r for r in records if r["kind"] == "run.end"]
    assert ends and ends[0]["status"] == "cancelled"
    assert "Ctrl-C" in ends[0]["reason"]
    rep = verify_run(run_dir, tmp_path / "keys" / "tenure.pub")
    assert rep.ok and rep.run_status == "cancelled"
    assert f"evidence: {run_dir} (verified)" in out.decode()

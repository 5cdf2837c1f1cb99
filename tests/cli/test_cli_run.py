"""``tenure run FILE:AGENT``: a user's file runs under governance; every mistake is one line.

Exit codes: 0 success, 1 a governance violation or an agent error (one line naming the
class, the check and the reason), 2 a usage error reported before anything runs.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.crypto import generate_key_files, load_public_key
from tenure.evidence import verify_run

USER_FILE = """
from tenure import Context, agent, tool

@tool(scopes={"math"})
async def add_tool(a: int, b: int) -> int:
    return a + b

@tool
async def shell_exec(command: str) -> str:
    return "ran " + command

@agent(scopes={"math"})
async def add(ctx: Context, a: int, b: int = 1) -> int:
    return await ctx.call(add_tool, a, b)

@agent
async def greet(ctx: Context, name: str) -> dict:
    return {"hello": name}

@agent
async def hacker(ctx: Context) -> str:
    return await ctx.call(shell_exec, "rm -rf /")

@agent
async def sleeper(ctx: Context) -> None:
    import anyio
    await anyio.sleep(30)

@agent
async def broken(ctx: Context) -> None:
    raise ValueError("the agent's own bug")

def helper() -> None:
    pass
"""


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    """`tenure run` imports user files; keep sys.path and sys.modules as they were."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "team.py"
    path.write_text(USER_FILE, encoding="utf-8")
    return path


def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["run", *args, "--evidence-dir", str(tmp_path / "runs")], catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def _tail(err: str) -> str:
    """stderr without the two lines `tenure run` prints at start (run id, how to stop it)."""
    lines = err.splitlines(keepends=True)
    assert lines[0].startswith("run run_") and " started; evidence: " in lines[0], err
    assert lines[1].startswith("stop it with Ctrl-C, or: tenure revoke run_"), err
    return "".join(lines[2:])


def test_run_prints_the_result_and_the_evidence_dir(tmp_path: Path, user_file: Path) -> None:
    code, out, err = _run(
        tmp_path, f"{user_file}:add", "2", "3", "--principal", "alice", "--scope", "math"
    )
    assert (code, _tail(err)) == (0, "")
    assert "result: 5" in out
    run_dirs = list((tmp_path / "runs").glob("run_*"))
    assert len(run_dirs) == 1 and (run_dirs[0] / "ledger.jsonl").is_file()
    assert err.startswith(f"run {run_dirs[0].name} started; evidence: {run_dirs[0]}\n")
    assert f"tenure revoke {run_dirs[0].name} --reason REASON" in err
    assert f"evidence: {run_dirs[0]}" in out
    assert f"tenure verify {run_dirs[0]} --key " in out


def test_args_are_json_literals_else_strings_and_name_value_is_a_keyword(
    tmp_path: Path, user_file: Path
) -> None:
    code, out, _ = _run(tmp_path, f"{user_file}:greet", "world", "--principal", "alice")
    assert code == 0 and 'result: {"hello": "world"}' in out
    code, out, _ = _run(
        tmp_path, f"{user_file}:add", "40", "b=2", "--principal", "alice", "--scope", "math"
    )
    assert code == 0 and "result: 42" in out


def test_missing_file_is_a_one_line_usage_error(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, f"{tmp_path / 'nope.py'}:add", "--principal", "alice")
    assert code == 2 and out == ""
    assert err == f"error: {tmp_path / 'nope.py'}: no such file\n"


def test_target_without_agent_name_is_a_usage_error(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, str(user_file), "--principal", "alice")
    assert code == 2
    assert "expected FILE:AGENT" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("raise ValueError('boom at import')\n", "ValueError: boom at import"),
        ("def broken(:\n", "SyntaxError"),
        ("import no_such_module_for_tenure_tests\n", "ModuleNotFoundError"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ],
)
def test_file_that_fails_to_import_names_the_file_and_the_exception(
    tmp_path: Path, source: str, expected: str
) -> None:
    bad = tmp_path / "bad_module.py"
    bad.write_text(source, encoding="utf-8")
    code, _, err = _run(tmp_path, f"{bad}:agent", "--principal", "alice")
    assert code == 2
    assert err.startswith(f"error: {bad}: failed to import: ")
    assert expected in err and err.count("\n") == 1


def test_name_not_in_the_file_lists_the_agents_it_has(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:planner", "--principal", "alice")
    assert code == 2
    assert f"{user_file}: no name 'planner'" in err
    assert "(agents in it: add, broken, greet, hacker, sleeper)" in err


def test_plain_function_is_not_an_agent(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:helper", "--principal", "alice")
    assert code == 2
    assert f"{user_file}:helper is not an @agent (it is a function)" in err


def test_tool_is_not_an_agent(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:add_tool", "--principal", "alice")
    assert code == 2
    assert f"{user_file}:add_tool is a @tool, not an @agent" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "missing a required argument: 'a'"),
        (("1", "2", "3"), "too many positional arguments"),
    ],
)
def test_wrong_arguments_name_the_agent_signature(
    tmp_path: Path, user_file: Path, args: tuple[str, ...], expected: str
) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:add", *args, "--principal", "alice")
    assert code == 2
    assert err.startswith("error: wrong arguments for agent add(ctx, a: int, b: int = 1): ")
    assert expected in err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_missing_policy_file_is_a_usage_error(tmp_path: Path, user_file: Path) -> None:
    missing = tmp_path / "policy.toml"
    code, _, err = _run(
        tmp_path, f"{user_file}:greet", "x", "--principal", "alice", "--policy", str(missing)
    )
    assert code == 2
    assert err == f"error: policy {missing}: no such policy file or folder\n"


def test_invalid_policy_is_refused_with_file_and_line(tmp_path: Path, user_file: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent("""\
        version = 1
        default = "deny"
        [[rules]]
        id = "r"
        effect = "permit"
    """),
        encoding="utf-8",
    )
    code, _, err = _run(
        tmp_path, f"{user_file}:greet", "x", "--principal", "alice", "--policy", str(bad)
    )
    assert code == 2
    assert err.startswith(f"error: policy {bad}:5: ")
    assert "permit" in err and err.count("\n") == 1


def test_missing_principal_is_a_usage_error(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:greet", "x")
    assert code == 2 and "--principal is required" in err


def test_policy_denial_exits_1_with_class_check_and_reason(tmp_path: Path, user_file: Path) -> None:
    code, out, err = _run(tmp_path, f"{user_file}:hacker", "--principal", "alice")
    assert code == 1
    assert _tail(err).startswith("error: PolicyDenied (check=rule:no-shell-or-delete): ")
    assert "tool:shell_exec denied" in err and _tail(err).count("\n") == 1
    assert "evidence: " in out


def test_ttl_expiry_exits_1_with_lease_expired(tmp_path: Path, user_file: Path) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:sleeper", "--principal", "alice", "--ttl", "0.2")
    assert code == 1
    assert _tail(err).startswith("error: LeaseExpired (check=run.ttl): ")


def test_agent_exception_exits_3_naming_the_exception_and_where(
    tmp_path: Path, user_file: Path
) -> None:
    code, _, err = _run(tmp_path, f"{user_file}:broken", "--principal", "alice")
    assert code == 3
    assert _tail(err).startswith("error: agent broken raised ValueError: the agent's own bug (")
    assert f"{user_file}:" in err and "--traceback shows where" in err


def test_example_file_runs_through_tenure_run(tmp_path: Path) -> None:
    """The copyable example is also a valid `tenure run` target (a denial it catches)."""
    example = Path(__file__).resolve().parents[2] / "examples" / "budgets.py"
    code, out, err = _run(tmp_path, f"{example}:summarizer", "3", "--principal", "alice")
    assert (code, _tail(err)) == (0, "")
    assert 'result: ["summary of chunk 0", "summary of chunk 1", "summary of chunk 2"]' in out


def test_key_option_signs_with_that_key_and_the_evidence_verifies_under_it(
    tmp_path: Path, user_file: Path
) -> None:
    generate_key_files(tmp_path / "keys")
    private = tmp_path / "keys" / "tenure.key"
    code, out, err = _run(
        tmp_path, f"{user_file}:greet", "bob", "--principal", "alice", "--key", str(private)
    )
    assert (code, _tail(err)) == (0, "")
    [run_dir] = list((tmp_path / "runs").glob("run_*"))
    public = tmp_path / "keys" / "tenure.pub"
    assert f"tenure verify {run_dir} --key {public}" in out
    assert verify_run(run_dir, load_public_key(public)).ok


def test_missing_key_file_exits_1_naming_the_file(tmp_path: Path, user_file: Path) -> None:
    missing = tmp_path / "nope.key"
    code, out, err = _run(
        tmp_path, f"{user_file}:greet", "bob", "--principal", "alice", "--key", str(missing)
    )
    assert code == 1 and out == ""
    assert err == f"error: GovernanceUnavailable (check=key.load): {missing}: " + (
        "signing key file is missing\n"
    )

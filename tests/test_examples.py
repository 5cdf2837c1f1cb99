"""Every example runs as a newcomer would run it (`python examples/NAME.py`) and says so.

Each example is run as a subprocess of this interpreter, from the repository root, with its
own key directory (``TENURE_KEY_DIR``) and evidence folder; the test checks the exit code
and the lines that prove the example showed what it promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.frameworks import needs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(name: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TENURE_KEY_DIR": str(tmp_path / "keys"), "NO_COLOR": "1"}
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _evidence(tmp_path: Path) -> str:
    return str(tmp_path / "runs")


def test_research_team_runs_with_a_denial_an_approval_and_verified_evidence(
    tmp_path: Path,
) -> None:
    proc = _run("research_team.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "shell_exec DENIED by policy (rule:no-shell-or-delete)" in out
    assert "approving pay_invoice (rule payments-need-approval)" in out
    assert "paid 49.00 to Northwind Stock Images" in out
    assert ": verified" in out
    assert f"--key {tmp_path / 'keys' / 'tenure.pub'}" in out


def test_revocation_stops_every_parallel_agent_and_says_when_and_why(tmp_path: Path) -> None:
    proc = _run("revocation.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "run stopped fail closed: LeaseRevoked (lease.revoked)" in out
    assert out.count("stopped  crawler") == 4
    assert "ms after the revocation" in out
    assert "why: LeaseRevoked check=lease.revoked source=revoke" in out
    assert "tool bodies started after revoke returned: 0" in out
    assert "verified (run status violation)" in out


def test_kill_switch_example_stops_the_run_from_another_process(tmp_path: Path) -> None:
    proc = _run("kill_switch.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "revocation requested: " in out
    assert "run stopped fail closed: LeaseRevoked (lease.revoked) by request:oncall" in out
    assert "lease.revoked by 'request:oncall', reason 'incident 42: data leaving the region'" in out
    assert "verified (run status violation)" in out


def test_approval_example_grants_one_payment_and_denies_the_other(tmp_path: Path) -> None:
    proc = _run("approval.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "GRANT" in out and "rule small-payments" in out
    assert "DENY" in out and "rule large-payments" in out
    assert "paid 49.00 to Northwind Stock Images" in out
    assert "NOT paid 25000.00 to Contoso Consulting" in out
    assert "over the 1000 limit" in out
    assert ": verified" in out


def test_budgets_example_stops_the_run_at_max_tool_calls(tmp_path: Path) -> None:
    proc = _run("budgets.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "PolicyDenied check=budget.max_tool_calls" in out
    assert "tool calls that ran: 5 of 100" in out
    assert "verified (run status violation)" in out


def test_tamper_evidence_fails_verification_at_the_edited_record(tmp_path: Path) -> None:
    proc = _run("tamper_evidence.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    k = int(next(x for x in lines if "the denial is record" in x).rsplit(" ", 1)[1].rstrip(")"))
    assert "before tampering: verified" in lines
    attack1 = next(x for x in lines if x.startswith("after attack 1:"))
    assert f"FAILED at record {k + 1} " in attack1
    assert f"does not match the hash of record {k} " in attack1
    attack2 = next(x for x in lines if x.startswith("after attack 2:"))
    assert "(checkpoint): checkpoint root does not match" in attack2
    assert "restored: verified" in lines


def test_tamper_evidence_cleans_up_its_temporary_evidence_by_default(tmp_path: Path) -> None:
    proc = _run("tamper_evidence.py", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = next(x for x in proc.stdout.splitlines() if x.startswith("evidence: "))
    assert not Path(run_dir.split(" ")[1]).exists()


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_imports_only_public_names(name: str) -> None:
    """Examples are what users copy: no ``tenure.x._private`` module, no ``_name`` import."""
    import ast

    tree = ast.parse((EXAMPLES / name).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tenure"):
            assert not any(part.startswith("_") for part in (node.module or "").split("."))
            assert not any(alias.name.startswith("_") for alias in node.names), node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert not any(p.startswith("_") for p in alias.name.split(".")), alias.name


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_docstring_saying_how_to_run_it(name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith('"""')
    assert f"examples/{name}" in text


def test_readme_first_example_runs_and_shows_the_denial(tmp_path: Path) -> None:
    """The README's first Python example is a working program (run from a temp folder)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    (tmp_path / "team.py").write_text(code, encoding="utf-8")
    env = {**os.environ, "TENURE_KEY_DIR": str(tmp_path / "keys")}
    proc = subprocess.run(
        [sys.executable, "team.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "['a page about leases', 'refused by rule:no-shell-or-delete']" in proc.stdout
    assert len(list((tmp_path / "runs").glob("run_*"))) == 1


def test_readme_first_screen_says_what_tenure_is_and_the_two_commands() -> None:
    first = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:40]
    assert any(line.startswith("make demo") for line in first)
    assert any(line.startswith("make test") for line in first)


def test_streaming_reads_tokens_from_a_local_model_and_a_revoke_stops_the_stream(
    tmp_path: Path,
) -> None:
    proc = _run("streaming.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "recorded: 13 tokens, status ok" in out
    assert "run stopped fail closed: LeaseRevoked (lease.revoked)" in out
    assert "tokens after the revocation: 0" in out
    assert "recorded: 5 tokens delivered, status stopped" in out
    assert out.count(": verified (run status") == 2


@needs("pydantic_ai")
def test_pydantic_ai_example_governs_an_unchanged_agent(tmp_path: Path) -> None:
    proc = _run("pydantic_ai_agent.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "approving refund (rule refunds-need-a-human) as bob" in out
    assert "Denied by Tenure (no-deletes)" in out and "refunded 19.00 on A-42" in out
    assert out.rstrip().endswith(": verified")


@needs("langgraph")
def test_langgraph_example_governs_both_ainvoke_and_invoke(tmp_path: Path) -> None:
    proc = _run("langgraph_agent.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for path in ("ainvoke:", "invoke :"):
        line = next(x for x in out.splitlines() if x.startswith(path))
        assert "search_wiki: 3 pages about leases [success]" in line
        assert "Denied by Tenure (never-wipe)" in line and "[error]" in line
    assert out.count(": verified") == 2


@needs("agents")
def test_openai_agents_example_hands_the_model_the_denial(tmp_path: Path) -> None:
    proc = _run("openai_agents.py", tmp_path, "--evidence-dir", _evidence(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "the model was told: T-7: printer on floor 3 is out of toner" in out
    assert "the model was told: Denied by Tenure (no-bulk-close)" in out
    assert out.rstrip().endswith(": verified")


@needs("openai")
def test_model_agent_example_governs_calls_to_a_local_model_until_the_budget_stops_it(
    tmp_path: Path,
) -> None:
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "model_agent.py"), "--evidence-dir", _evidence(tmp_path)],
        cwd=ROOT,
        env={**env_free, "TENURE_KEY_DIR": str(tmp_path / "keys"), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "answer: Leases are short" in out and "streamed: Leases are short" in out
    assert "refused before sending: rule:default-deny" in out
    assert "run stopped: budget.max_tokens" in out and "was not sent" in out
    assert ": verified" in out


def test_mcp_proxy_guide_policy_loads_and_its_server_exists() -> None:
    from tenure.policies import PolicySet

    guide = (EXAMPLES / "mcp_proxy.md").read_text(encoding="utf-8")
    (policy,) = re.findall(r"```toml\n(.*?)```", guide, re.S)
    rules = {r.id for r in PolicySet.from_text(policy, source="mcp_proxy.md").rules}
    assert {"the-session", "no-delete", "payments-need-a-human"} <= rules
    assert (ROOT / "tests" / "adapters" / "mcp_server.py").is_file()

"""A run across processes: a planner here, researchers on two workers, stopped from the CLI.

Needs a PostgreSQL backend with the schema (``tenure db upgrade``) and two workers of pool
``research`` serving ``examples/distributed/team.py``; ``make demo-cluster`` starts all of that
in a temporary directory and runs this script. It:

1. runs ``planner`` here: its researchers run on the workers and come back;
2. starts ``long_study``, whose ``watcher`` keeps a worker busy, and stops the whole run with
   ``tenure revoke RUN --backend URL`` from another process;
3. exports both runs from the backend (one directory per segment) and verifies each with
   the operator's public key alone.

    .venv/bin/python examples/distributed/main.py URL EVIDENCE_DIR OPERATOR_PUB
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio

from tenure import LeaseRevoked, Runtime
from tenure.policies import PolicySet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from team import long_study, planner  # the workers load the same file

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "research-team"
effect = "allow"
targets = ["planner", "researcher", "read_notes", "long_study", "watcher"]

[budgets]
max_tool_calls = 200
"""


def tenure(*argv: str) -> subprocess.CompletedProcess[str]:
    """The command line, in a process of its own (as an operator would run it)."""
    return subprocess.run(
        [sys.executable, "-m", "tenure", *argv], capture_output=True, text=True, check=False
    )


def export_and_verify(url: str, run_id: str, out: Path, operator_pub: str) -> bool:
    done = tenure("export", run_id, "--backend", url, "--out", str(out))
    print("    " + (done.stdout.strip() or done.stderr.strip()))
    check = tenure("verify", str(out), "--key", operator_pub)
    for line in check.stdout.strip().splitlines():
        print("      " + line)
    return check.returncode == 0


async def main(url: str, evidence: Path, operator_pub: str) -> int:
    policy_file = evidence / "team.toml"
    policy_file.parent.mkdir(parents=True, exist_ok=True)
    policy_file.write_text(POLICY)
    PolicySet.load(policy_file)  # a bad policy is refused here, with file and line
    async with Runtime(backend=url, evidence_dir=evidence, policies=policy_file) as rt:
        print("1. planner here, researchers on the pool")
        topics = ["governed execution", "fail closed", "evidence"]
        team = await rt.start(planner, topics, principal="alice", scopes={"library:read"})
        for finding in await team.result():
            print(f"   {finding['topic']}: {finding['finding']}")

        print("2. a long study on a worker, revoked from the command line")
        study = await rt.start(long_study, "evidence", principal="alice", scopes={"library:read"})
        await anyio.sleep(1.0)  # the watcher is reading on its worker by now
        revoked = await anyio.to_thread.run_sync(
            lambda: tenure(
                "revoke", study.run_id, "--reason", "demo: stop it everywhere", "--backend", url
            )
        )
        print("   " + revoked.stdout.strip())
        try:
            await study.result()
            print("   the study was not stopped")
            return 1
        except LeaseRevoked as exc:
            print(f"   stopped: {type(exc).__name__} ({exc.check}) from {exc.source}")

    print("3. export from the backend, verify with the operator's key")
    ok = True
    for name, handle in (("team", team), ("study", study)):
        print(f"   run {handle.run_id} ({name}):")
        ok &= export_and_verify(url, handle.run_id, evidence / f"export-{name}", operator_pub)
    print("cluster demo: " + ("everything verified" if ok else "VERIFICATION FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1], Path(sys.argv[2]), sys.argv[3]))

"""Budgets: a run that would call a tool 100 times is stopped at its policy's limit.

The inline policy allows everything but caps the run at `max_tool_calls = 5`. The sixth
call is refused before its body starts and the whole run stops, fail closed, with
`PolicyDenied` naming the budget (`budget.max_tool_calls`). Budgets are per run; the other
limits (steps, tokens, cost, wall time, depth, concurrency) work the same way.

    .venv/bin/python examples/budgets.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from tenure import Context, PolicyDenied, Runtime, agent, tool
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "summarize-anything"
effect = "allow"
targets = ["summarizer", "summarize"]

[budgets]
max_tool_calls = 5
"""

calls_run = 0


@tool
async def summarize(chunk: int) -> str:
    """Summarize one chunk (simulated)."""
    global calls_run
    calls_run += 1
    return f"summary of chunk {chunk}"


@agent
async def summarizer(ctx: Context, chunks: int) -> list[str]:
    """Summarize every chunk, one tool call each."""
    return [await ctx.call(summarize, i) for i in range(chunks)]


async def main(evidence_dir: Path) -> int:
    """Run past the budget and show the stop."""
    policy = PolicySet.from_text(POLICY, source="budgets.py")
    async with Runtime(policies=policy, evidence_dir=evidence_dir) as rt:
        handle = await rt.start(summarizer, 100, principal="alice", ttl=30)
        try:
            await handle.result()
        except PolicyDenied as exc:
            print(f"run stopped fail closed: PolicyDenied check={exc.check}: {exc.reason}")
            stopped = exc.check == "budget.max_tool_calls"
        else:
            print("unexpected: the run finished")
            stopped = False
    print(f"tool calls that ran: {calls_run} of 100 asked for")
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(
        f"evidence {handle.evidence_path}: "
        + ("verified" if report.ok else f"INVALID {report.failure_line()}")
        + f" (run status {report.run_status})"
    )
    return 0 if stopped and calls_run == 5 and report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    raise SystemExit(anyio.run(main, parser.parse_args().evidence_dir))

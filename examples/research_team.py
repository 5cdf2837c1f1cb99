"""A governed research team: the workflow of `tenure demo`, as a file to copy.

A planner fans out to three researchers in parallel (each calls the `search` tool over a
small built-in corpus), a writer drafts (and tries a shell command, which the default policy
denies: the writer catches `PolicyDenied` and goes on), a reviewer checks the draft, and the
planner pays for a cover image with `pay_invoice`, which the default policy holds for a
person's approval. An approver task plays that person.

Run it from the repository root (after `make demo` created the venv):

    .venv/bin/python examples/research_team.py [--evidence-dir runs]

Everything is offline and deterministic: no network, no model keys. The run's evidence goes
to `<evidence-dir>/<run id>/`; the script verifies it with the runtime's public key at the
end and prints the commands to look deeper.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio

from tenure import Context, PolicyDenied, Runtime, SigningKey, agent, tool
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

CORPUS = (
    "Leases are short-lived signed capabilities; a child lease can only narrow its parent.",
    "A revoked lease revokes every descendant lease with it.",
    "Policies are default deny: a step runs only when a rule allows it.",
    "Evidence ledgers are hash-chained and checkpointed with signed Merkle roots.",
    "Verification needs only the run directory and the runtime's public key.",
    "Approvals are signed statements recorded before the approved step starts.",
)
SUBTOPICS = ("leases and revocation", "policy decisions", "evidence and verification")
SCOPES = {"web:read", "docs:write", "docs:read", "exec", "payments"}


@tool(scopes={"web:read"})
async def search(query: str) -> list[str]:
    """Corpus sentences sharing a word (5-letter stem) with the query."""
    await anyio.sleep(0.02)  # stands in for a network round trip
    stems = {w[:5] for w in query.lower().split() if len(w) > 3}
    return [doc for doc in CORPUS if any(s in doc.lower() for s in stems)][:2]


@tool(scopes={"exec"})
async def shell_exec(command: str) -> str:
    """Run a shell command. The default policy denies `shell*`, so this never runs."""
    raise RuntimeError("unreachable under the default policy")


@tool(scopes={"payments"})
async def pay_invoice(vendor: str, amount: float) -> str:
    """Pay a vendor (simulated). The default policy holds `pay*` for approval."""
    return f"paid {amount:.2f} to {vendor}"


@tool(scopes={"docs:read"})
async def check_facts(draft: str, sources: list[str]) -> list[str]:
    """Points of the draft that none of the sources support."""
    return [
        line for line in draft.splitlines() if line.startswith("- ") and line[2:] not in sources
    ]


@agent(scopes={"web:read"})
async def researcher(ctx: Context, subtopic: str) -> list[str]:
    """Collect notes on one subtopic."""
    hits: list[str] = await ctx.call(search, subtopic)
    print(f"  researcher  {subtopic!r}: {len(hits)} source(s)")
    return hits


@agent(scopes={"docs:write", "exec"})
async def writer(ctx: Context, topic: str, notes: list[str]) -> str:
    """Draft the report (rendering it with a shell tool is denied by policy)."""
    try:
        await ctx.call(shell_exec, "pandoc report.md -o report.pdf")
    except PolicyDenied as exc:
        print(f"  writer      shell_exec DENIED by policy ({exc.check}); plain text instead")
    return "\n".join([f"# {topic}", *(f"- {n}" for n in notes)])


@agent(scopes={"docs:read"})
async def reviewer(ctx: Context, draft: str, sources: list[str]) -> str:
    """Fact-check the draft."""
    unsupported: list[str] = await ctx.call(check_facts, draft, sources)
    verdict = "approved" if not unsupported else f"{len(unsupported)} unsupported point(s)"
    print(f"  reviewer    {verdict}")
    return verdict


@agent(scopes={"web:read", "docs:write", "docs:read", "exec", "payments"})
async def planner(ctx: Context, topic: str) -> dict[str, Any]:
    """Research in parallel, write, review, pay for the cover image."""
    async with ctx.parallel() as p:
        for subtopic in SUBTOPICS:
            p.start(researcher, subtopic)
    notes = list(dict.fromkeys(n for found in p.results for n in found))
    draft = await ctx.delegate(writer, topic, notes)
    review = await ctx.delegate(reviewer, draft, notes)
    receipt = await ctx.call(pay_invoice, "Northwind Stock Images", 49.0)
    print(f"  planner     {receipt}")
    return {"topic": topic, "points": len(notes), "review": review, "receipt": receipt}


#: the simulated approver's own key (declared in the policy below; never the runtime's)
FINANCE_LEAD = SigningKey.generate()


async def approver(rt: Runtime) -> None:
    """A simulated person who approves every payment request it sees, with their key."""
    while True:
        for request in rt.pending_approvals():
            print(f"  approver    approving {request.target} (rule {request.rule_id})")
            rt.approve(request.id, approver=FINANCE_LEAD)
        await anyio.sleep(0.01)


async def main(evidence_dir: Path) -> int:
    """Run the team once, then verify its evidence with the runtime's public key."""
    policy = PolicySet.default().with_approvers({"finance-lead": FINANCE_LEAD.public_text})
    async with (
        Runtime(policies=policy, evidence_dir=evidence_dir) as rt,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(approver, rt)
        handle = await rt.start(
            planner, "governed execution", principal="alice", scopes=SCOPES, ttl=30
        )
        result = await handle.result()
        tg.cancel_scope.cancel()
    print(f"result: {result}")
    pub = default_key_dir() / "tenure.pub"
    report = verify_run(handle.evidence_path, load_public_key(pub))
    print(
        f"evidence {handle.evidence_path}: "
        + ("verified" if report.ok else f"INVALID {report.failure_line()}")
    )
    print(f"look deeper: tenure verify {handle.evidence_path} --key {pub}")
    print(f"             tenure trace {handle.evidence_path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    raise SystemExit(anyio.run(main, parser.parse_args().evidence_dir))

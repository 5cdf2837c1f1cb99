"""``tenure demo``: the flagship multi-agent workflow, offline, with live governance.

Two runs of the same research workflow (deterministic agents over a small built-in corpus;
no network, no model keys):

1. **research**: a planner fans out to three researchers in parallel (each calls the
   ``search`` tool), a writer drafts and tries ``shell_exec`` (denied by policy: the writer
   catches :class:`~tenure.PolicyDenied` and goes on), a reviewer checks, and the planner
   pays for a stock image with ``pay_invoice`` (``require_approval``), which a simulated
   approver grants. The run ends ``ok``.
2. **revoked**: the same workflow reading many pages; once every researcher is underway a
   simulated operator revokes the run, which stops fail closed with
   :class:`~tenure.LeaseRevoked`.

Live progress comes from two sources printed through one :class:`Narrator`: the agents'
own one-line narration, and the run's evidence ledger, tailed (decisions, approvals,
revocations, violations) -- every complete line the ledger has written is printed before
any narration line, so the order on screen follows the ledger. Output is plain lines
(rich styles only when the terminal supports them): it works when stdout is not a TTY.

Then, for each run: verification of its evidence against the runtime's public key (the key
file in the key directory, never only the copy inside the run directory) and the lineage
tree; finally the commands to look deeper.

Invariants: the demo reports success (``True`` / exit 0) only when run 1 ended ok with one
denial and one approval, run 2 stopped with ``LeaseRevoked``, and both runs' evidence
verified with the trusted key. Every wait is bounded (``fail_after``), so a regression
fails the demo instead of hanging it.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.text import Text

from .._errors import GovernanceViolation, LeaseRevoked, PolicyDenied
from ..agents import Context, agent, tool
from ..crypto import PUBLIC_KEY_NAME, SigningKey, default_key_dir, load_public_key, load_signing_key
from ..evidence import verify_run
from ..lineage import LedgerReadError, load_trace
from ..policies import PolicySet
from ..runtime import RunHandle, Runtime
from ._narrator import Narrator
from ._tree import print_trace

__all__ = ["CORPUS", "DemoOutcome", "planner", "run_demo"]

#: The built-in corpus the ``search`` tool reads (deterministic, offline).
CORPUS: tuple[str, ...] = (
    "Leases are short-lived signed capabilities; a child lease can only narrow its parent.",
    "A revoked lease revokes every descendant lease with it.",
    "Policies are default deny: a step runs only when a rule allows it.",
    "Any matching deny rule wins over require_approval, which wins over allow.",
    "Evidence ledgers are hash-chained and checkpointed with signed Merkle roots.",
    "Verification needs only the run directory and the runtime's public key.",
    "The watchdog re-validates live leases and stops the run when one fails.",
    "Revocation takes effect before the revoke call returns; no task resumes after it.",
    "Approvals are signed statements recorded before the approved step starts.",
    "Budgets cap steps, tool calls, tokens, cost, wall time, depth and concurrency.",
)

_SUBTOPICS = ("leases and revocation", "policy decisions", "evidence and verification")
_STOPWORDS = frozenset({"and", "the", "a", "of"})

_NARRATOR: Narrator | None = None


def _narrate(ctx: Context, who: str, text: str) -> None:
    if _NARRATOR is not None:
        _NARRATOR.say(who, text, run_id=ctx.run_id)


# --- tools -------------------------------------------------------------------------------


@tool(scopes={"web:read"})
async def search(query: str, page: int = 1) -> list[str]:
    """Find corpus sentences sharing a word with ``query`` (two per page)."""
    await anyio.sleep(0.02)  # stands in for a network round trip
    words = {w for w in query.lower().split() if w not in _STOPWORDS}
    stems = {w[:5] for w in words}
    hits = [doc for doc in CORPUS if any(s in doc.lower() for s in stems)]
    start = (page - 1) * 2 % max(len(hits), 1)
    return hits[start : start + 2]


@tool(scopes={"exec"})
async def shell_exec(command: str) -> str:
    """Run a shell command (the default policy denies ``shell*``: this body never runs)."""
    raise RuntimeError(f"shell_exec must never run in the demo (asked for {command!r})")


@tool(scopes={"payments"})
async def pay_invoice(vendor: str, amount: float) -> str:
    """Pay a vendor (simulated; the default policy holds ``pay*`` for approval)."""
    return f"receipt-{sum(map(ord, vendor)) % 10000:04d} {vendor} {amount:.2f}"


@tool(scopes={"docs:read"})
async def check_facts(draft: str, sources: list[str]) -> list[str]:
    """Sentences of ``draft`` not found among ``sources`` (a reviewer's fact check)."""
    known = set(sources)
    return [s for s in draft.split("\n") if s.startswith("- ") and s[2:] not in known]


# --- agents ------------------------------------------------------------------------------


@agent(scopes={"web:read"})
async def researcher(ctx: Context, subtopic: str, pages: int = 1) -> list[str]:
    """Collect notes on ``subtopic`` from ``pages`` pages of search results."""
    notes: list[str] = []
    for page in range(1, pages + 1):
        hits = await ctx.call(search, subtopic, page)
        notes.extend(h for h in hits if h not in notes)
        if _NARRATOR is not None:
            _NARRATOR.searched(ctx.run_id, subtopic)
        _narrate(ctx, "researcher", f"{subtopic!r} page {page}: {len(hits)} source(s)")
    return notes


@agent(scopes={"docs:write", "exec"})
async def writer(ctx: Context, topic: str, notes: list[str]) -> str:
    """Draft a short report; tries to render it with a shell command first."""
    try:
        await ctx.call(shell_exec, "pandoc report.md -o report.pdf")
    except PolicyDenied as exc:
        if _NARRATOR is not None:
            _NARRATOR.denials += 1
        _narrate(ctx, "writer", f"caught PolicyDenied ({exc.check}); writing plain text instead")
    draft = "\n".join([f"# {topic}", *(f"- {n}" for n in notes)])
    _narrate(ctx, "writer", f"drafted {len(notes)} point(s)")
    return draft


@agent(scopes={"docs:read"})
async def reviewer(ctx: Context, draft: str, sources: list[str]) -> str:
    """Check every point of the draft against the sources."""
    unsupported = await ctx.call(check_facts, draft, sources)
    verdict = "approved" if not unsupported else f"{len(unsupported)} unsupported point(s)"
    _narrate(ctx, "reviewer", f"review: {verdict}")
    return verdict


@agent(scopes={"web:read", "docs:write", "docs:read", "exec", "payments"})
async def planner(ctx: Context, topic: str, pages: int = 1) -> dict[str, Any]:
    """Fan out research, have it written and reviewed, pay for the cover image."""
    _narrate(ctx, "planner", f"fanning out to {len(_SUBTOPICS)} researchers on {topic!r}")
    async with ctx.parallel() as p:
        for subtopic in _SUBTOPICS:
            p.start(researcher, subtopic, pages)
    notes = [note for found in p.results for note in found]
    draft = await ctx.delegate(writer, topic, notes)
    review = await ctx.delegate(reviewer, draft, notes)
    receipt = await ctx.call(pay_invoice, "Northwind Stock Images", 49.0)
    _narrate(ctx, "planner", f"paid for the cover image: {receipt}")
    return {"topic": topic, "points": len(notes), "review": review, "receipt": receipt}


# --- live output -------------------------------------------------------------------------


@dataclass
class DemoOutcome:
    """What happened, checked against what the demo promises."""

    runs: list[tuple[str, str, Path]] = field(default_factory=list)  # (label, run_id, dir)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every expectation held."""
        return not self.problems


#: the simulated approver's name in the policy the demo runs under
DEMO_APPROVER = "finance-lead"


async def _approver(rt: Runtime, narrator: Narrator, key: SigningKey) -> None:
    """A simulated person holding their own approver key: reads each pending request (its
    arguments included) and signs a grant over exactly that action."""
    seen: set[str] = set()
    while True:
        for req in rt.pending_approvals():
            if req.id in seen:
                continue
            seen.add(req.id)
            narrator.say(
                "approver",
                f"reviewing {req.id}: {req.action} {req.target}"
                f"({', '.join(f'{k}={v!r}' for k, v in json.loads(req.args).items())}) "
                f"for {req.principal} (rule {req.rule_id}); signing with key {key.key_id}",
                run_id=req.run_id,
            )
            await anyio.sleep(0.05)  # a quick read
            rt.approve(req.id, approver=key)
            narrator.approvals += 1
        await anyio.sleep(0.01)


async def _start_watched(
    rt: Runtime, narrator: Narrator, out: DemoOutcome, label: str, note: str, *args: Any
) -> RunHandle:
    """Start the demo workflow as run ``label``; the narrator follows its ledger and says
    ``note`` (formatted with the ``run_id``)."""
    handle = await rt.start(
        planner,
        "governed execution",
        *args,
        principal="alice",
        scopes={"web:read", "docs:write", "docs:read", "exec", "payments"},
        ttl=30,
    )
    narrator.watch(handle.run_id, label, handle.evidence_path / "ledger.jsonl")
    out.runs.append((label, handle.run_id, handle.evidence_path))
    narrator.say("demo", note.format(run_id=handle.run_id), run_id=handle.run_id, style="bold")
    return handle


async def _research_run(rt: Runtime, narrator: Narrator, out: DemoOutcome) -> None:
    note = "run 1 started: {run_id} (principal alice)"
    handle = await _start_watched(rt, narrator, out, "research", note)
    try:
        with anyio.fail_after(20):
            result = await handle.result()
    except GovernanceViolation as exc:
        narrator.drain()
        out.problems.append(f"run 1 was stopped: {type(exc).__name__}: {exc.reason}")
        return
    except Exception as exc:  # e.g. a policy that let shell_exec run: report, not crash
        narrator.drain()
        out.problems.append(f"run 1 failed: {type(exc).__name__}: {exc}")
        return
    narrator.drain()
    narrator.say("demo", f"run 1 result: {json.dumps(result)}", run_id=handle.run_id, style="green")
    if narrator.denials != 1:
        out.problems.append(f"run 1: expected one denied tool call, saw {narrator.denials}")
    if narrator.approvals < 1:
        out.problems.append("run 1: the payment was never approved")


async def _revoked_run(rt: Runtime, narrator: Narrator, out: DemoOutcome) -> None:
    note = "run 2 started: {run_id} (the same workflow, 200 pages per researcher)"
    handle = await _start_watched(rt, narrator, out, "revoked", note, 200)
    with anyio.fail_after(20):  # set once every researcher searched, or at the run's end
        await narrator.underway[handle.run_id].wait()
    if handle.run_id in narrator.ended:
        narrator.drain()
        out.problems.append("run 2 ended before its researchers got underway")
        return
    reason = "operator: research budget for today is spent"
    narrator.say(
        "operator",
        f"rt.revoke({handle.run_id!r}, reason={reason!r})",
        run_id=handle.run_id,
        style="bold magenta",
    )
    rt.revoke(handle.run_id, reason=reason)
    try:
        with anyio.fail_after(20):
            await handle.result()
    except LeaseRevoked as exc:
        narrator.drain()
        narrator.say(
            "demo",
            f"run 2 stopped fail closed: LeaseRevoked check={exc.check}: {exc.reason}",
            run_id=handle.run_id,
            style="bold",
        )
        return
    except (GovernanceViolation, Exception) as exc:
        out.problems.append(f"run 2 ended with {type(exc).__name__}, expected LeaseRevoked")
        return
    finally:
        narrator.drain()
    out.problems.append("run 2 finished although it was revoked")


def _report(console: Console, out: DemoOutcome, pub_path: Path) -> None:
    public_key = load_public_key(pub_path)
    expected = {"research": "ok", "revoked": "violation"}
    console.rule("Evidence")
    for label, run_id, run_dir in out.runs:
        rep = verify_run(run_dir, public_key)
        line = Text(f"{label:<8} {run_id}  ")
        if rep.ok:
            line.append("verified", style="bold green")
            line.append(
                f"  {rep.records} records, {rep.checkpoints} signed checkpoint(s), "
                f"run status {rep.run_status}, key {rep.key_id}"
            )
        else:
            line.append("NOT VERIFIED", style="bold red")
            line.append(f"  {rep.failure_line()}")
            out.problems.append(
                f"{label} run {run_id}: evidence did not verify: {rep.failure_line()}"
            )
        console.print(line, soft_wrap=True)
        if rep.ok and rep.run_status != expected.get(label, rep.run_status):
            out.problems.append(
                f"{label} run {run_id}: run status {rep.run_status}, expected {expected[label]}"
            )
    console.print(Text(f"(trusted key: {pub_path})", style="dim"), soft_wrap=True)
    for label, run_id, run_dir in out.runs:
        console.rule(f"Lineage: {label} run {run_id}")
        try:
            print_trace(load_trace(run_dir), console)
        except (LedgerReadError, OSError) as exc:
            console.print(Text(f"cannot show the lineage: {exc}", style="red"))
    console.rule("Look deeper")
    tenure = tenure_command()
    for _label, run_id, run_dir in out.runs:
        for command in (
            f"{tenure} verify {run_dir} --key {pub_path}",
            f"{tenure} trace {run_dir}",
            f"{tenure} report {run_dir} --key {pub_path} -o {run_id}.html",
        ):
            console.print(f"  {command}", soft_wrap=True, highlight=False, markup=False)
    if tenure != "tenure":
        console.print(
            Text(f"(`tenure` is not on your PATH: the commands use {tenure})", style="dim"),
            soft_wrap=True,
        )


def tenure_command() -> str:
    """How to call ``tenure`` from here: the bare name when the PATH finds this install,
    else this interpreter's script (relative when under the current directory, as after
    ``make demo``: ``.venv/bin/tenure``), else ``python -m tenure``."""
    script = Path(sys.executable).parent / "tenure"
    found = shutil.which("tenure")
    if found is not None and (not script.exists() or Path(found).resolve() == script.resolve()):
        return "tenure"
    if not script.exists():
        return f"{sys.executable} -m tenure"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


async def run_demo(
    evidence_dir: Path,
    *,
    policy: Path | None = None,
    otlp: str | None = None,
    console: Console | None = None,
) -> DemoOutcome:
    """Run the whole demo; its :class:`DemoOutcome` says whether everything held."""
    global _NARRATOR
    console = console or Console(highlight=False)
    key = load_signing_key()
    pub_path = default_key_dir() / PUBLIC_KEY_NAME
    policies = PolicySet.load(policy) if policy is not None else PolicySet.default()
    # The simulated approver holds a key of its own, which the policy declares: the run's
    # key could never approve, and a name alone proves nothing.
    approver_key = SigningKey.generate()
    policies = policies.with_approvers({DEMO_APPROVER: approver_key.public_text})
    narrator = Narrator(console, researchers=len(_SUBTOPICS))
    out = DemoOutcome()
    console.rule("Tenure demo: a governed research team (offline, deterministic agents)")
    console.print(
        f"policy: {', '.join(str(s) for s in policies.sources) or '(inline)'}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    console.print(
        f"evidence: {evidence_dir}/<run id>/    signing key: {key.key_id}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    _NARRATOR = narrator
    try:
        async with (
            Runtime(
                policies=policies, evidence_dir=evidence_dir, key=key, otlp_endpoint=otlp
            ) as rt,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(narrator.follow)
            tg.start_soon(_approver, rt, narrator, approver_key)
            await _research_run(rt, narrator, out)
            await _revoked_run(rt, narrator, out)
            tg.cancel_scope.cancel()
    finally:
        _NARRATOR = None
    narrator.drain()
    _report(console, out, pub_path)
    if out.ok:
        console.print(
            Text(
                "Demo complete: run 1 finished with one denial and one approval, "
                "run 2 was revoked mid-flight and stopped fail closed; both runs' "
                "evidence verified.",
                style="bold green",
            ),
            soft_wrap=True,
        )
    else:
        for problem in out.problems:
            console.print(Text(f"unexpected: {problem}", style="bold red"), soft_wrap=True)
    return out

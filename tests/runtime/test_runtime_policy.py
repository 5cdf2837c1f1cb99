"""Policy decisions at the runtime: each effect, precedence, callers and argument conditions.

Every test runs real agents through a :class:`Runtime` with its own key and evidence folder
and checks three things: what the caller saw (result or ``PolicyDenied`` and its check), whether
the tool body ran, and what the evidence says (the decision record names the rule, and the
ledger verifies).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tenure import Context, PolicyDenied, Runtime, SigningKey, agent, tool
from tenure.evidence import verify_run
from tenure.policies import PolicySet
from tests.support.evidence import decisions

HEAD = 'version = 1\ndefault = "deny"\n'

ALLOW_AGENTS = """
[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]
"""


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _decisions(run_dir: Path, target: str) -> list[dict[str, Any]]:
    return [d for d in decisions(_records(run_dir)) if d["target"] == target]


def _verified(run_dir: Path, key: SigningKey) -> None:
    rep = verify_run(run_dir, key.public_key)
    assert rep.ok, rep.failure_line()


class _Harness:
    """A runtime on one policy text, plus a record of which tool bodies ran."""

    def __init__(self, policy_text: str, evidence: Path) -> None:
        self.key = SigningKey.generate()
        self.policy = PolicySet.from_text(HEAD + policy_text, source="test.toml")
        self.evidence = evidence
        self.ran: list[tuple[str, tuple[Any, ...]]] = []

    def runtime(self, **kw: Any) -> Runtime:
        return Runtime(policies=self.policy, evidence_dir=self.evidence, key=self.key, **kw)

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.evidence.iterdir() if p.name.startswith("run_"))

    def verify_all(self) -> None:
        dirs = self.run_dirs()
        assert dirs
        for d in dirs:
            _verified(d, self.key)


def _payment_tools(h: _Harness) -> tuple[Any, Any]:
    @tool(name="pay")
    async def pay(to: str, amount: int, memo: str = "") -> str:
        h.ran.append(("pay", (to, amount)))
        return f"paid {amount} to {to}"

    @tool(name="lookup")
    async def lookup(query: str) -> str:
        h.ran.append(("lookup", (query,)))
        return query.upper()

    return pay, lookup


async def test_allow_runs_the_tool_and_records_the_allowing_rule(evidence: Path) -> None:
    h = _Harness(
        ALLOW_AGENTS
        + """
[[rules]]
id = "lookup-ok"
effect = "allow"
actions = ["execute_tool"]
targets = ["lookup"]
""",
        evidence,
    )
    _, lookup = _payment_tools(h)

    @agent
    async def clerk(ctx: Context) -> str:
        out: str = await ctx.call(lookup, "abc")
        return out

    async with h.runtime() as rt:
        handle = await rt.start(clerk, principal="alice")
        assert await handle.result() == "ABC"
    assert h.ran == [("lookup", ("abc",))]
    [d] = _decisions(handle.evidence_path, "lookup")
    assert (d["effect"], d["rule"]) == ("allow", "lookup-ok")
    recs = _records(handle.evidence_path)
    [start] = [r for r in recs if r["kind"] == "step.start" and r["target"] == "lookup"]
    # An outright allow is carried by the step's own start record (no decision record).
    assert start == d and start["decision"] == -1 and start["approval"] == -1
    assert not [r for r in recs if r["kind"] == "decision"]
    h.verify_all()


async def test_deny_raises_at_the_call_site_and_the_tool_body_never_runs(evidence: Path) -> None:
    h = _Harness(
        ALLOW_AGENTS
        + """
[[rules]]
id = "no-payments"
effect = "deny"
actions = ["execute_tool"]
targets = ["pay"]
""",
        evidence,
    )
    pay, _ = _payment_tools(h)
    seen: list[PolicyDenied] = []

    @agent
    async def clerk(ctx: Context) -> str:
        try:
            await ctx.call(pay, "bob", 5)
        except PolicyDenied as exc:
            seen.append(exc)
            return "refused"
        return "paid"

    async with h.runtime() as rt:
        handle = await rt.start(clerk, principal="alice")
        assert await handle.result() == "refused"
    assert h.ran == []
    [exc] = seen
    assert exc.check == "rule:no-payments"
    assert exc.run_id == handle.run_id and exc.task == "tool:pay"
    [d] = _decisions(handle.evidence_path, "pay")
    assert (d["effect"], d["rule"]) == ("deny", "no-payments")
    assert "no-payments" in d["reason"]
    starts = [
        r
        for r in _records(handle.evidence_path)
        if r["kind"] == "step.start" and r["target"] == "pay"
    ]
    assert starts == []
    h.verify_all()


async def test_uncaught_deny_ends_the_run_with_policy_denied_and_it_verifies(
    evidence: Path,
) -> None:
    h = _Harness(ALLOW_AGENTS, evidence)
    pay, _ = _payment_tools(h)

    @agent
    async def clerk(ctx: Context) -> None:
        await ctx.call(pay, "bob", 5)

    async with h.runtime() as rt:
        handle = await rt.start(clerk, principal="alice")
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert info.value.check == "rule:default-deny"
    assert h.ran == []
    [end] = [r for r in _records(handle.evidence_path) if r["kind"] == "run.end"]
    assert (end["status"], end["check"]) == ("violation", "rule:default-deny")
    h.verify_all()


async def test_an_unlisted_tool_is_refused_by_default_deny(evidence: Path) -> None:
    h = _Harness(
        ALLOW_AGENTS
        + """
[[rules]]
id = "lookup-ok"
effect = "allow"
targets = ["lookup"]
""",
        evidence,
    )
    pay, lookup = _payment_tools(h)
    seen: list[str] = []

    @agent
    async def clerk(ctx: Context) -> None:
        await ctx.call(lookup, "q")
        try:
            await ctx.call(pay, "bob", 1)
        except PolicyDenied as exc:
            seen.append(exc.check or "")

    async with h.runtime() as rt:
        handle = await rt.start(clerk, principal="alice")
        await handle.result()
    assert seen == ["rule:default-deny"]
    assert h.ran == [("lookup", ("q",))]
    [d] = _decisions(handle.evidence_path, "pay")
    assert (d["effect"], d["rule"]) == ("deny", "default-deny")
    h.verify_all()


async def test_an_unlisted_root_agent_is_refused_before_any_lease_or_step(
    evidence: Path,
) -> None:
    h = _Harness(
        """
[[rules]]
id = "only-clerk"
effect = "allow"
targets = ["clerk"]
""",
        evidence,
    )
    body_ran = False

    @agent
    async def intruder(ctx: Context) -> None:
        nonlocal body_ran
        body_ran = True

    async with h.runtime() as rt:
        handle = await rt.start(intruder, principal="alice")
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert info.value.check == "rule:default-deny"
    assert body_ran is False
    kinds = [r["kind"] for r in _records(handle.evidence_path)]
    assert "lease.issued" not in kinds and "step.start" not in kinds
    h.verify_all()


@pytest.mark.parametrize(
    ("effects", "winner"),
    [
        (("allow", "require_approval", "deny"), "deny"),
        (("allow", "deny"), "deny"),
        (("deny", "allow"), "deny"),
        (("allow", "require_approval"), "require_approval"),
        (("require_approval", "allow"), "require_approval"),
    ],
)
async def test_precedence_deny_over_approval_over_allow_at_runtime(
    evidence: Path, effects: tuple[str, ...], winner: str
) -> None:
    rules = "".join(
        f'\n[[rules]]\nid = "r-{e}"\neffect = "{e}"\ntargets = ["lookup"]\n' for e in effects
    )
    h = _Harness(ALLOW_AGENTS + rules, evidence)
    _, lookup = _payment_tools(h)
    seen: list[str] = []

    @agent
    async def clerk(ctx: Context) -> None:
        try:
            await ctx.call(lookup, "q")
        except PolicyDenied as exc:
            seen.append(exc.check or "")

    # With nobody to answer, require_approval times out: a refusal of its own kind.
    async with h.runtime(approval_timeout=0.05) as rt:
        handle = await rt.start(clerk, principal="alice")
        await handle.result()
    assert h.ran == []
    [d] = _decisions(handle.evidence_path, "lookup")
    assert (d["effect"], d["rule"]) == (winner, f"r-{winner}")
    assert seen == (["rule:r-deny"] if winner == "deny" else ["approval.timeout"])
    h.verify_all()


async def test_callers_glob_allows_a_tool_only_for_the_named_agent(evidence: Path) -> None:
    h = _Harness(
        ALLOW_AGENTS
        + """
[[rules]]
id = "treasurer-pays"
effect = "allow"
actions = ["execute_tool"]
targets = ["pay"]
callers = ["treasur*"]
""",
        evidence,
    )
    pay, _ = _payment_tools(h)
    refused: list[str] = []

    @agent
    async def treasurer(ctx: Context) -> str:
        out: str = await ctx.call(pay, "bob", 10)
        return out

    @agent
    async def intern(ctx: Context) -> None:
        try:
            await ctx.call(pay, "mallory", 10)
        except PolicyDenied as exc:
            refused.append(exc.check or "")

    @agent
    async def boss(ctx: Context) -> None:
        await ctx.delegate(treasurer)
        await ctx.delegate(intern)

    async with h.runtime() as rt:
        handle = await rt.start(boss, principal="alice")
        await handle.result()
    assert h.ran == [("pay", ("bob", 10))]
    assert refused == ["rule:default-deny"]
    by_caller = {
        d["caller"]: (d["effect"], d["rule"]) for d in _decisions(handle.evidence_path, "pay")
    }
    assert by_caller == {
        "treasurer": ("allow", "treasurer-pays"),
        "intern": ("deny", "default-deny"),
    }
    h.verify_all()


BIG_PAYMENTS = (
    ALLOW_AGENTS
    + """
[[rules]]
id = "payments"
effect = "allow"
targets = ["pay"]

[[rules]]
id = "no-big-payments"
effect = "deny"
targets = ["pay"]
when = { "args.amount" = { gt = 1000 } }
"""
)


@pytest.mark.parametrize(
    ("args", "kwargs", "allowed"),
    [
        (("bob", 5), {}, True),
        (("bob", 5000), {}, False),
        (("bob",), {"amount": 5000}, False),
        ((), {"to": "bob", "amount": 1000}, True),
        ((), {"amount": 1001, "to": "bob", "memo": "x"}, False),
    ],
)
async def test_when_condition_binds_arguments_by_parameter_name(
    evidence: Path, args: tuple[Any, ...], kwargs: dict[str, Any], allowed: bool
) -> None:
    h = _Harness(BIG_PAYMENTS, evidence)
    pay, _ = _payment_tools(h)
    refused: list[str] = []

    @agent
    async def clerk(ctx: Context) -> None:
        try:
            await ctx.call(pay, *args, **kwargs)
        except PolicyDenied as exc:
            refused.append(exc.check or "")

    async with h.runtime() as rt:
        handle = await rt.start(clerk, principal="alice")
        await handle.result()
    if allowed:
        assert len(h.ran) == 1 and refused == []
    else:
        assert h.ran == [] and refused == ["rule:no-big-payments"]
    h.verify_all()


async def test_condition_on_an_argument_the_tool_does_not_take_denies_with_that_reason(
    evidence: Path,
) -> None:
    h = _Harness(
        ALLOW_AGENTS
        + """
[[rules]]
id = "lookup-short"
effect = "allow"
targets = ["lookup"]
when = { "args.amount" = { lt = 10 } }
""",
        evidence,
    )
    _, lookup = _payment_tools(h)
    seen: list[PolicyDenied] = []

    @agent
    async def clerk(ctx: Context) -> None:
        try:
            await ctx.call(lookup, "q")
        except PolicyDenied as exc:
            seen.append(exc)

    async with h.runtime() as rt:
        handle = await rt.start(clerk, principal="alice")
        await handle.result()
    assert h.ran == []
    [exc] = seen
    assert exc.check == "rule:lookup-short"
    assert "takes no argument amount" in str(exc)
    [d] = _decisions(handle.evidence_path, "lookup")
    assert d["effect"] == "deny" and "takes no argument amount" in d["reason"]
    h.verify_all()


async def test_condition_with_a_mismatched_type_denies_rather_than_not_matching(
    evidence: Path,
) -> None:
    h = _Harness(BIG_PAYMENTS, evidence)
    pay, _ = _payment_tools(h)
    seen: list[PolicyDenied] = []

    @agent
    async def clerk(ctx: Context) -> None:
        try:
            await ctx.call(pay, "bob", "5000")  # a string never slips past a numeric guard
        except PolicyDenied as exc:
            seen.append(exc)

    async with h.runtime() as rt:
        await rt.run(clerk, principal="alice")
    assert h.ran == []
    [exc] = seen
    assert exc.check == "rule:no-big-payments" and "cannot compare" in str(exc)
    h.verify_all()


async def test_principal_glob_decides_who_may_run_an_agent(evidence: Path) -> None:
    h = _Harness(
        """
[[rules]]
id = "team-runs"
effect = "allow"
principals = ["team:*"]
""",
        evidence,
    )

    @agent
    async def job(ctx: Context) -> str:
        return ctx.principal

    async with h.runtime() as rt:
        assert await rt.run(job, principal="team:blue") == "team:blue"
        with pytest.raises(PolicyDenied) as info:
            await rt.run(job, principal="mallory")
    assert info.value.check == "rule:default-deny"
    h.verify_all()

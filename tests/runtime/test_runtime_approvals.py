"""``require_approval`` at the runtime: granted, denied, timed out, and what the evidence shows.

An approver is another task that polls ``rt.pending_approvals()`` (as a person's console
would) and answers with ``rt.approve`` / ``rt.deny``. The waiting step holds no side effects:
until the grant is signed and recorded, its body has not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

from tenure import (
    ApprovalRequest,
    Context,
    LeaseRevoked,
    PolicyDenied,
    RunHandle,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.crypto import GRANT_PAYLOAD_TYPE, key_text, verify_envelope
from tenure.evidence import verify_run
from tenure.policies import PolicySet
from tests.support.evidence import issued_leases, renewed_leases

#: the approver the policies below declare; MALLORY holds a key nobody declared
CAROL = SigningKey.generate()
MALLORY = SigningKey.generate()

POLICY = f"""
version = 1
default = "deny"

[approvers]
carol = "{key_text(CAROL.public_key)}"

[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]
targets = ["clerk", "boss"]

[[rules]]
id = "pay-needs-a-human"
effect = "require_approval"
actions = ["execute_tool"]
targets = ["pay"]

[[rules]]
id = "senior-needs-a-human"
effect = "require_approval"
actions = ["invoke_agent"]
targets = ["senior"]
"""

DENY_PAY = """
version = 1
default = "deny"

[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]

[[rules]]
id = "pay-frozen"
effect = "deny"
targets = ["pay"]
"""


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def _kinds(run_dir: Path) -> list[str]:
    return [r["kind"] for r in _records(run_dir)]


async def _next_request(rt: Runtime) -> ApprovalRequest:
    """Poll the runtime's pending requests as an approver's console would."""
    with anyio.fail_after(10):
        while True:
            pending = rt.pending_approvals()
            if pending:
                return pending[0]
            await anyio.sleep(0.005)


class _Bank:
    def __init__(self) -> None:
        self.paid: list[tuple[str, int]] = []

        @tool(name="pay")
        async def pay(to: str, amount: int) -> str:
            self.paid.append((to, amount))
            return "ok"

        self.pay = pay


def _runtime(evidence: Path, key: SigningKey, policy: str = POLICY, **kw: Any) -> Runtime:
    return Runtime(
        policies=PolicySet.from_text(policy, source="approvals.toml"),
        evidence_dir=evidence,
        key=key,
        **kw,
    )


def _clerk(bank: _Bank) -> Any:
    @agent
    async def clerk(ctx: Context, amount: int) -> str:
        out: str = await ctx.call(bank.pay, "bob", amount)
        return out

    return clerk


async def _start(rt: Runtime, bank: _Bank, amount: int = 50) -> RunHandle:
    return await rt.start(_clerk(bank), amount, principal="alice")


def _signed_statement(rec: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """The approver's statement a ledger record carries, after checking its signature."""
    statement: dict[str, Any] = json.loads(
        verify_envelope(rec["envelope"], key.public_key, GRANT_PAYLOAD_TYPE)
    )
    return statement


async def test_approved_step_runs_after_a_signed_recorded_grant(
    evidence: Path, key: SigningKey
) -> None:
    bank = _Bank()
    async with _runtime(evidence, key) as rt:
        handle = await _start(rt, bank)
        request = await _next_request(rt)
        assert bank.paid == []  # waiting holds no side effects
        assert (
            request.run_id,
            request.principal,
            request.action,
            request.target,
            request.rule_id,
        ) == (handle.run_id, "alice", "execute_tool", "pay", "pay-needs-a-human")
        assert request.id.startswith("apr_")
        rt.approve(request.id, approver=CAROL)
        assert await handle.result() == "ok"
        assert rt.pending_approvals() == []
    assert bank.paid == [("bob", 50)]
    recs = _records(handle.evidence_path)
    [req] = [r for r in recs if r["kind"] == "approval.requested"]
    [grant] = [r for r in recs if r["kind"] == "approval.granted"]
    [dec] = [r for r in recs if r["kind"] == "decision" and r["target"] == "pay"]
    [start] = [r for r in recs if r["kind"] == "step.start" and r["target"] == "pay"]
    assert (dec["effect"], dec["rule"]) == ("require_approval", "pay-needs-a-human")
    assert (req["request"], req["rule"], req["principal"]) == (
        request.id,
        "pay-needs-a-human",
        "alice",
    )
    assert grant["request"] == request.id and grant["approver"] == "carol"
    assert grant["approver_key"] == CAROL.key_id
    assert start["approval"] == grant["i"] and start["decision"] == dec["i"]
    assert dec["i"] < req["i"] < grant["i"] < start["i"]
    assert req["action_digest"] == request.action_digest and req["approvers"] == ["carol"]
    statement = _signed_statement(grant, CAROL)
    assert (statement["request"], statement["decision"], statement["action"]) == (
        request.id,
        "granted",
        request.action_digest,
    )
    assert json.loads(request.args) == {"to": "bob", "amount": 50}
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_denied_approval_refuses_the_step_and_the_tool_never_runs(
    evidence: Path, key: SigningKey
) -> None:
    bank = _Bank()
    async with _runtime(evidence, key) as rt:
        handle = await _start(rt, bank)
        request = await _next_request(rt)
        rt.deny(request.id, approver=CAROL, reason="not this week")
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert bank.paid == []
    assert info.value.check == "approval.denied"
    assert "not this week" in str(info.value) and "carol" in str(info.value)
    recs = _records(handle.evidence_path)
    [denied] = [r for r in recs if r["kind"] == "approval.denied"]
    assert (denied["approver"], denied["reason"]) == ("carol", "not this week")
    statement = _signed_statement(denied, CAROL)
    assert statement["decision"] == "denied" and statement["reason"] == "not this week"
    assert not [r for r in recs if r["kind"] == "step.start" and r["target"] == "pay"]
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_unanswered_approval_times_out_into_a_deny(evidence: Path, key: SigningKey) -> None:
    bank = _Bank()
    async with _runtime(evidence, key, approval_timeout=0.2) as rt:
        handle = await _start(rt, bank)
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
        assert rt.pending_approvals() == []
    assert bank.paid == []
    assert info.value.check == "approval.timeout"
    recs = _records(handle.evidence_path)
    [denied] = [r for r in recs if r["kind"] == "approval.denied"]
    assert denied["approver"] == "timeout"
    assert "step.start" not in [r["kind"] for r in recs if r.get("target") == "pay"]
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_an_agent_can_catch_a_refused_approval_and_carry_on(
    evidence: Path, key: SigningKey
) -> None:
    bank = _Bank()

    @agent
    async def clerk(ctx: Context) -> str:
        try:
            await ctx.call(bank.pay, "bob", 1)
        except PolicyDenied as exc:
            return f"fallback after {exc.check}"
        return "paid"

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(clerk, principal="alice")
        rt.deny((await _next_request(rt)).id, approver=CAROL)
        assert await handle.result() == "fallback after approval.denied"
    assert bank.paid == []
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_approving_an_unknown_or_answered_request_is_a_key_error(
    evidence: Path, key: SigningKey
) -> None:
    bank = _Bank()
    async with _runtime(evidence, key) as rt:
        handle = await _start(rt, bank)
        request = await _next_request(rt)
        with pytest.raises(KeyError):
            rt.approve("apr_doesnotexist", approver=CAROL)
        rt.approve(request.id, approver=CAROL)
        with pytest.raises(KeyError):
            rt.approve(request.id, approver=MALLORY)
        with pytest.raises(KeyError):
            rt.deny(request.id, approver=MALLORY)
        assert await handle.result() == "ok"
    grants = [r for r in _records(handle.evidence_path) if r["kind"] == "approval.granted"]
    assert [g["approver"] for g in grants] == ["carol"]
    assert bank.paid == [("bob", 50)]


async def test_approval_request_cannot_be_forged_or_altered_by_users(
    evidence: Path, key: SigningKey
) -> None:
    bank = _Bank()
    async with _runtime(evidence, key) as rt:
        handle = await _start(rt, bank)
        request = await _next_request(rt)
        with pytest.raises(pydantic.ValidationError):
            request.target = "something-else"  # type: ignore[misc]
        assert rt.pending_approvals()[0].target == "pay"
        rt.approve(request.id, approver=CAROL)
        await handle.result()


async def test_revoking_a_run_waiting_for_approval_drops_the_request_and_never_runs_it(
    evidence: Path, key: SigningKey
) -> None:
    bank = _Bank()
    async with _runtime(evidence, key) as rt:
        handle = await _start(rt, bank)
        request = await _next_request(rt)
        rt.revoke(handle.run_id, reason="fraud suspected")
        with pytest.raises(LeaseRevoked):
            await handle.result()
        assert rt.pending_approvals() == []
        with pytest.raises(KeyError):
            rt.approve(request.id, approver=CAROL)
    assert bank.paid == []
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_an_approved_agent_keeps_its_lease_renewed_past_one_generation(
    evidence: Path, key: SigningKey
) -> None:
    """An approval counts as the allow when the watchdog renews the approved agent's lease."""
    done = anyio.Event()

    @agent
    async def senior(ctx: Context) -> str:
        with anyio.fail_after(10):
            await done.wait()
        return "signed off"

    @agent
    async def boss(ctx: Context) -> str:
        out: str = await ctx.delegate(senior)
        return out

    async with _runtime(evidence, key, lease_seconds=0.5, watchdog_interval=0.02) as rt:
        handle = await rt.start(boss, principal="alice")
        rt.approve((await _next_request(rt)).id, approver=CAROL)
        # Wait until the approved agent's lease has been renewed twice, then let it finish.
        with anyio.fail_after(10):
            while True:
                if len(renewed_leases(_records(handle.evidence_path))) >= 4 or handle.done:
                    break
                await anyio.sleep(0.02)
        done.set()
        assert await handle.result() == "signed off"
    recs = _records(handle.evidence_path)
    [issued] = [c for c in issued_leases(recs) if c["sub"] == "agent:senior"]
    renewed = [c for c in renewed_leases(recs) if c["lid"] == issued["lid"]]
    assert len(renewed) >= 2
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_a_reload_during_the_wait_still_allowing_it_keeps_an_approved_agent_running(
    evidence: Path, key: SigningKey
) -> None:
    done = anyio.Event()
    running = anyio.Event()

    @agent
    async def senior(ctx: Context) -> str:
        running.set()
        await done.wait()
        return "signed off"

    @agent
    async def boss(ctx: Context) -> str:
        out: str = await ctx.delegate(senior)
        return out

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(boss, principal="alice")
        rt.approve((await _next_request(rt)).id, approver=CAROL)
        await running.wait()
        # Same rules, new digest: the live approved step is re-decided and still stands.
        rt.reload_policies(PolicySet.from_text(POLICY + "\n# v2\n[budgets]\nmax_steps = 99\n"))
        done.set()
        assert await handle.result() == "signed off"
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_a_grant_after_a_reload_that_denies_the_step_does_not_run_it(
    evidence: Path, key: SigningKey
) -> None:
    """The approval answered a question the current policy no longer asks: deny wins."""
    bank = _Bank()
    async with _runtime(evidence, key) as rt:
        handle = await _start(rt, bank)
        request = await _next_request(rt)
        rt.reload_policies(PolicySet.from_text(DENY_PAY, source="deny-pay.toml"))
        if rt.pending_approvals():
            rt.approve(request.id, approver=CAROL)
        with pytest.raises(PolicyDenied) as info:
            await handle.result()
    assert bank.paid == []
    assert info.value.check == "rule:pay-frozen"
    assert verify_run(handle.evidence_path, key.public_key).ok

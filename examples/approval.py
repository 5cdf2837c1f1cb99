"""Approvals: one payment approved, one denied, both decided by policy conditions.

The inline policy holds every `pay_invoice` for a person, under two rules told apart by a
condition on the call's `amount` argument. The simulated approver grants requests under
`small-payments` and denies those under `large-payments`. The approver holds an Ed25519 key
of its own, which the policy declares in `[approvers]`: a grant is that key's signature over
the request and exactly the action it holds (target, arguments, rule), recorded in the
evidence *before* the step starts; the runtime's own key could never approve. A denied step
never starts and raises `PolicyDenied` at the call site, where this agent catches it and
carries on.

    .venv/bin/python examples/approval.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from tenure import Context, PolicyDenied, Runtime, SigningKey, agent, tool
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

#: the approver's key: in production it lives with the person, never with the runtime
FINANCE_LEAD = SigningKey.generate()

POLICY = f"""
version = 1
default = "deny"

[approvers]
finance-lead = "{FINANCE_LEAD.public_text}"

[[rules]]
id = "accounts-team"
effect = "allow"
actions = ["invoke_agent"]
targets = ["accounts_payable"]

[[rules]]
id = "small-payments"
effect = "require_approval"
targets = ["pay_invoice"]
approvers = ["finance-lead"]
when = {{ "args.amount" = {{ le = 1000 }} }}

[[rules]]
id = "large-payments"
effect = "require_approval"
targets = ["pay_invoice"]
when = {{ "args.amount" = {{ gt = 1000 }} }}
"""


@tool(scopes={"payments"})
async def pay_invoice(vendor: str, amount: float) -> str:
    """Pay a vendor (simulated)."""
    return f"paid {amount:.2f} to {vendor}"


@agent(scopes={"payments"})
async def accounts_payable(ctx: Context, invoices: list[tuple[str, float]]) -> list[str]:
    """Pay each invoice; a refused payment is reported, not fatal."""
    outcomes = []
    for vendor, amount in invoices:
        try:
            outcomes.append(await ctx.call(pay_invoice, vendor, amount))
        except PolicyDenied as exc:
            outcomes.append(f"NOT paid {amount:.2f} to {vendor}: {exc.reason}")
    return outcomes


async def approver(rt: Runtime) -> None:
    """Grants small payments, denies large ones (by the rule that held each request)."""
    while True:
        for request in rt.pending_approvals():
            if request.rule_id == "small-payments":
                args = " ".join(request.args.split())  # the arguments it will run on
                held = f"{request.id} ({request.target}, rule {request.rule_id})"
                print(f"approver: GRANT {held} {args}")
                rt.approve(request.id, approver=FINANCE_LEAD)
            else:
                print(f"approver: DENY  {request.id} ({request.target}, rule {request.rule_id})")
                rt.deny(request.id, approver=FINANCE_LEAD, reason="over the 1000 limit")
        await anyio.sleep(0.01)


async def main(evidence_dir: Path) -> int:
    """Pay two invoices under approval, then verify the evidence."""
    policy = PolicySet.from_text(POLICY, source="approval.py")
    invoices = [("Northwind Stock Images", 49.0), ("Contoso Consulting", 25_000.0)]
    async with (
        Runtime(policies=policy, evidence_dir=evidence_dir) as rt,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(approver, rt)
        handle = await rt.start(
            accounts_payable, invoices, principal="alice", scopes={"payments"}, ttl=30
        )
        outcomes = await handle.result()
        tg.cancel_scope.cancel()
    for line in outcomes:
        print(f"  {line}")
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(
        f"evidence {handle.evidence_path}: "
        + ("verified" if report.ok else f"INVALID {report.failure_line()}")
    )
    print(f"see both approvals in the lineage: tenure trace {handle.evidence_path}")
    expected = outcomes[0].startswith("paid") and outcomes[1].startswith("NOT paid")
    return 0 if report.ok and expected else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    raise SystemExit(anyio.run(main, parser.parse_args().evidence_dir))

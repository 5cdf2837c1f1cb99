"""Governed code reaching for authority it was not given: its own lease, the runtime itself,
arguments changed after the decision, results that cannot be described.

Each test is named after the attack, asserts it is refused, and that the trusted state (the
signed lease, the ledger, other runs) is what it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tenure import (
    Context,
    Lease,
    PolicyDenied,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.evidence._verify import verify_run
from tenure.policies import PolicySet
from tests.support.evidence import issued_leases


def _records(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    return [r for r in recs if kind is None or r["kind"] == kind]


@tool(scopes={"admin"})
async def drop_tables() -> str:
    return "dropped"


@agent(scopes={"admin", "read"})
async def admin_child(ctx: Context) -> list[str]:
    return sorted(ctx.lease.scopes)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("scope_set", frozenset({"read", "admin"})),
        ("claims", None),
        ("payload", b"{}"),
        ("digest", "sha256:" + "0" * 64),
        ("envelope", {}),
    ],
)
async def test_an_agent_cannot_widen_its_own_lease_by_assigning_to_it(
    allow_all: PolicySet, evidence: Path, key: SigningKey, attribute: str, value: Any
) -> None:
    """The attack: ``ctx.lease.scope_set = {"read", "admin"}`` in a run granted {"read"},
    then call a tool needing ``admin`` and delegate to a child. The assignment raises, the
    tool is denied, the child gets only what was signed, and the run verifies."""
    seen: dict[str, Any] = {}

    @agent(scopes={"read", "admin"})
    async def widen(ctx: Context) -> None:
        lease: Any = ctx.lease
        try:
            setattr(lease, attribute, value)
        except AttributeError as exc:
            seen["assign"] = str(exc)
        try:
            seen["envelope_copy"] = lease.envelope.clear()
        finally:
            seen["scopes"] = sorted(ctx.lease.scopes)
        try:
            await ctx.call(drop_tables)
        except PolicyDenied as exc:
            seen["tool"] = exc.check
        seen["child"] = await ctx.delegate(admin_child)

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(widen, principal="alice", scopes={"read"}, ttl=30)
        await handle.result()
    assert "a Lease is immutable" in seen["assign"]
    assert seen["scopes"] == ["read"]
    assert seen["tool"] == "scope.admin"
    assert seen["child"] == ["read"]
    issued = issued_leases(_records(handle.evidence_path))
    assert [c["scopes"] for c in issued] == [["read"], ["read"]]
    assert verify_run(handle.evidence_path, key.public_key).ok


def test_a_lease_has_no_public_constructor_and_no_writable_attribute() -> None:
    """Only the authority makes leases; ``object.__setattr__`` remains (see Honest limits)."""
    with pytest.raises(TypeError):
        Lease(None, b"", {})  # type: ignore[arg-type]


RISKY = """
version = 1
[[rules]]
id = "all"
effect = "allow"
"""


def _run_dirs(evidence: Path) -> list[str]:
    return sorted(p.name for p in evidence.iterdir() if p.name.startswith("run_"))


def _public_objects(root: object, depth: int = 3) -> list[object]:
    """Every object reachable from ``root`` through public attributes (no underscores)."""
    seen: list[object] = []
    frontier = [root]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            for name in dir(obj):
                if name.startswith("_"):
                    continue
                try:
                    value = getattr(obj, name)
                except Exception:
                    continue
                if any(value is s for s in seen):
                    continue
                seen.append(value)
                nxt.append(value)
        frontier = nxt
    return seen


async def test_nothing_public_reachable_from_ctx_holds_the_signing_key_or_the_runtime(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """Walk every public attribute of ``ctx`` (three levels deep): no SigningKey, no lease
    authority, no Runtime, no private key bytes are among them."""
    from tenure.runtime.kernel._authority import LeaseAuthority

    found: list[object] = []

    @agent
    async def snoop(ctx: Context) -> None:
        found.extend(_public_objects(ctx))

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        await rt.run(snoop, principal="alice", ttl=30)
        private = key.private_raw if hasattr(key, "private_raw") else None
        for obj in found:
            assert not isinstance(obj, SigningKey | LeaseAuthority | Runtime)
            assert private is None or obj != private


@pytest.mark.parametrize("what", ["start", "run", "reload", "revoke_other", "deny"])
async def test_governed_code_cannot_use_the_runtime_that_governs_it(
    allow_all: PolicySet, evidence: Path, key: SigningKey, what: str
) -> None:
    """The attack: an agent holding ``rt`` starts a run as another principal with wider
    scopes, reloads the policy, revokes another principal's run or answers an approval.
    Each call is refused (``runtime.reentry``), the calling run is stopped, and nothing it
    asked for happened."""
    ran: list[str] = []

    @agent(scopes={"admin"})
    async def escalated(ctx: Context) -> None:
        ran.append("escalated")

    @agent
    async def victim(ctx: Context) -> None:
        await anyio.sleep(30)

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        other = await rt.start(victim, principal="bob", ttl=30)
        epoch = rt._gov.epoch

        @agent
        async def reach(ctx: Context) -> None:
            if what == "start":
                await rt.start(escalated, principal="root", scopes={"admin"}, ttl=30)
            elif what == "run":
                await rt.run(escalated, principal="root", scopes={"admin"}, ttl=30)
            elif what == "reload":
                rt.reload_policies(PolicySet.from_text(RISKY))
            elif what == "revoke_other":
                rt.revoke(other.run_id, reason="sabotage")
            else:
                rt.deny("apr_any", approver=SigningKey.generate())

        handle = await rt.start(reach, principal="alice", ttl=30)
        with pytest.raises(PolicyDenied) as err:
            await handle.result()
        assert err.value.check == "runtime.reentry"
        assert rt._gov.epoch == epoch
        assert not other.done  # the other principal's run is untouched
        rt.revoke(other.run_id, reason="test over")
    assert ran == []
    assert _run_dirs(evidence) == sorted([handle.run_id, other.run_id])
    [violation] = _records(handle.evidence_path, "violation")
    assert violation["check"] == "runtime.reentry"


@pytest.mark.parametrize("route", ["worker_thread", "task_of_its_own"])
async def test_governed_code_reaching_for_the_runtime_from_a_thread_or_task_it_starts_is_refused(
    allow_all: PolicySet, evidence: Path, key: SigningKey, route: str
) -> None:
    """The attack: the agent starts a run as ``root`` with ``admin`` scopes, not from its
    own body but from a worker thread it starts (``anyio.to_thread`` calling back with
    ``anyio.from_thread``) or from an asyncio task it creates. Both inherit the run's
    context, so both are refused as ``runtime.reentry`` and nothing runs as ``root``."""
    import asyncio

    ran: list[str] = []

    @agent(scopes={"admin"})
    async def escalated(ctx: Context) -> None:
        ran.append("escalated")

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:

        async def escalate() -> None:
            await rt.run(escalated, principal="root", scopes={"admin"}, ttl=30)

        @agent
        async def reach(ctx: Context) -> None:
            if route == "worker_thread":
                await anyio.to_thread.run_sync(anyio.from_thread.run, escalate)
            else:
                await asyncio.get_running_loop().create_task(escalate())

        with pytest.raises(PolicyDenied) as err:
            await rt.run(reach, principal="alice", ttl=30)
        assert err.value.check == "runtime.reentry"
    run_id = err.value.run_id
    assert ran == [] and run_id is not None
    assert _run_dirs(evidence) == [run_id]
    [violation] = _records(evidence / run_id, "violation")
    assert violation["check"] == "runtime.reentry"


async def test_governed_code_may_revoke_its_own_run(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """Giving up authority is allowed: revoking its own run stops it as a revocation."""
    from tenure import LeaseRevoked

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:

        @agent
        async def quit_(ctx: Context) -> None:
            rt.revoke(ctx.run_id, reason="done with it")
            await anyio.sleep(5)

        with pytest.raises(LeaseRevoked):
            await rt.run(quit_, principal="alice", ttl=30)


INVOICES = """
version = 1
[[rules]]
id = "acct-1-only"
effect = "allow"
targets = ["pay", "payer", "editor"]
[[rules]]
id = "no-other-accounts"
effect = "deny"
targets = ["pay"]
when = { "args.to" = { ne = "acct-1" } }
"""


@tool
async def pay(invoice: dict[str, Any], to: str) -> str:
    await anyio.lowlevel.checkpoint()  # another task runs here
    return f"paid {invoice['amount']} to {to} for {invoice['id']}"


async def test_a_sibling_editing_an_approved_argument_does_not_change_what_runs(
    evidence: Path, key: SigningKey
) -> None:
    """The attack: a parallel sibling edits the invoice dict between the decision and the
    call. The tool runs on the snapshot the decision (and the digest) saw."""
    invoice = {"id": "inv-1", "amount": 10}
    edited = anyio.Event()

    @agent
    async def editor(ctx: Context) -> None:
        invoice["amount"] = 10_000
        invoice["id"] = "inv-attacker"
        edited.set()

    @agent
    async def payer(ctx: Context) -> str:
        async with ctx.parallel() as p:
            paid = p.start(pay, invoice, "acct-1")
            p.start(editor)
        return str(paid.result())

    async with Runtime(
        policies=PolicySet.from_text(INVOICES), evidence_dir=evidence, key=key
    ) as rt:
        handle = await rt.start(payer, principal="alice", ttl=30)
        result = await handle.result()
    assert edited.is_set()
    assert result == "paid 10 to acct-1 for inv-1"
    assert verify_run(handle.evidence_path, key.public_key).ok


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str refused")


@tool
async def odd_result() -> object:
    return _Unprintable()


@tool
async def odd_error() -> None:
    raise _UnprintableError()


async def test_every_started_step_ends_whatever_its_result_or_error(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """A result whose repr raises, and an error whose str raises, used to leave a
    ``step.start`` without a ``step.end``. Both steps now end, and the run verifies."""

    @agent
    async def odd(ctx: Context) -> str:
        await ctx.call(odd_result)
        try:
            await ctx.call(odd_error)
        except _UnprintableError:
            return "caught"
        return "no error"

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(odd, principal="alice", ttl=30)
        assert await handle.result() == "caught"
    starts = {r["step"] for r in _records(handle.evidence_path, "step.start")}
    ends = {r["step"]: r for r in _records(handle.evidence_path, "step.end")}
    assert starts == set(ends)
    assert (
        ends["3"]["error"] == "_UnprintableError" and "str() of the error" in ends["3"]["message"]
    )
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_an_argument_without_a_canonical_form_is_denied_and_the_tool_never_runs(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """An object that can show the policy one face and the tool another is not decided on:
    a recorded deny (``args.canonical``) naming the argument."""
    ran: list[object] = []

    @tool
    async def take(thing: object) -> None:
        ran.append(thing)

    @agent
    async def hand_over(ctx: Context) -> str:
        try:
            await ctx.call(take, object())
        except PolicyDenied as exc:
            return f"{exc.check}: {exc}"
        return "ran"

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(hand_over, principal="alice", ttl=30)
        message = await handle.result()
    assert (
        message.startswith("args.canonical: ") and "argument args[0] (builtins.object)" in message
    )
    assert ran == []
    denies = [d for d in _records(handle.evidence_path, "decision") if d["effect"] == "deny"]
    assert [d["rule"] for d in denies] == ["args.canonical"]
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_a_tool_built_during_the_run_is_refused_before_it_first_runs(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """The attack: an agent turns model-written source into a tool mid-run and calls it.
    Its code was never measured into the run's attestation: refused (recorded), never run."""
    ran: list[str] = []

    @agent
    async def improviser(ctx: Context) -> str:
        namespace: dict[str, Any] = {"ran": ran}
        exec("async def generated():\n    ran.append('generated')\n", namespace)
        generated = tool(name="generated")(namespace["generated"])
        try:
            await ctx.call(generated)
        except PolicyDenied as exc:
            return exc.check or ""
        return "ran"

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(improviser, principal="alice", ttl=30)
        assert await handle.result() == "attestation.unattested"
    assert ran == []
    [deny] = [d for d in _records(handle.evidence_path, "decision") if d["effect"] == "deny"]
    assert deny["rule"] == "attestation.unattested" and deny["target"] == "generated"
    assert verify_run(handle.evidence_path, key.public_key).ok

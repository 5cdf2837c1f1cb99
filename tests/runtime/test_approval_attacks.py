"""Attacks on approvals: grants by the wrong key, for the wrong action, or by no key at all.

Each test asserts the grant is refused, the request is still pending (trusted state
unchanged: nothing recorded, the body not run), and the genuine grant still works after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenure import (
    ApprovalRequest,
    Context,
    PolicyDenied,
    Runtime,
    SignatureInvalid,
    SigningKey,
    agent,
    tool,
)
from tenure.crypto import (
    action_digest,
    args_digest_of,
    args_encoding,
    generate_key_files,
    sign_grant,
)
from tenure.evidence import verify_run
from tenure.evidence._approval_check import ApprovalCheck
from tenure.policies import PolicySet

CFO = SigningKey.generate()
CLERK = SigningKey.generate()  # declared, but only for small payments
OUTSIDER = SigningKey.generate()  # declared nowhere


def _policy(extra: str = "") -> PolicySet:
    return PolicySet.from_text(
        f"""
version = 1
[approvers]
cfo = "{CFO.public_text}"
clerk = "{CLERK.public_text}"
{extra}
[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]

[[rules]]
id = "big-payments"
effect = "require_approval"
targets = ["pay"]
approvers = ["cfo"]
"""
    )


paid: list[tuple[str, int]] = []


@tool
async def pay(to: str, amount: int) -> str:
    paid.append((to, amount))
    return f"paid {amount} to {to}"


@agent
async def payer(ctx: Context, to: str, amount: int) -> str:
    out: str = await ctx.call(pay, to, amount)
    return out


async def _held(rt: Runtime) -> ApprovalRequest:
    # A person's console polls; there is no event to wait on from outside the runtime.
    with anyio.fail_after(10):
        while True:
            pending = rt.pending_approvals()
            if pending:
                return pending[0]
            await anyio.sleep(0.005)


def _records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(autouse=True)
def _fresh_ledger_of_payments() -> None:
    paid.clear()


def _forgeries(request: ApprovalRequest, runtime_key: SigningKey) -> dict[str, Any]:
    """Grants an attacker can make: every one must be refused."""
    other_action = request.action_digest[:-4] + "0000"
    return {
        "runtime's own key": sign_grant(
            runtime_key, request=request.id, action=request.action_digest, decision="granted"
        ),
        "undeclared key": sign_grant(
            OUTSIDER, request=request.id, action=request.action_digest, decision="granted"
        ),
        "key declared for another rule": sign_grant(
            CLERK, request=request.id, action=request.action_digest, decision="granted"
        ),
        "other arguments": sign_grant(
            CFO, request=request.id, action=other_action, decision="granted"
        ),
        "unsigned": {"payloadType": "x", "payload": "", "signatures": []},
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "runtime's own key",
        "undeclared key",
        "key declared for another rule",
        "other arguments",
        "unsigned",
    ],
)
async def test_a_grant_not_signed_by_a_declared_approver_over_this_action_is_refused(
    evidence: Path, key: SigningKey, forgery: str
) -> None:
    """The attack: approve a held payment with a key the policy does not accept for it, or
    with the right key over other arguments. Refused with SignatureInvalid; the request
    stays pending, nothing is recorded, nothing is paid; the CFO's grant then works."""
    policy = _policy(f'runtime = "{key.public_text}"')  # declared, and still never accepted
    async with Runtime(policies=policy, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(payer, "acct-1", 5000, principal="alice", ttl=30)
        request = await _held(rt)
        with pytest.raises(SignatureInvalid):
            rt.approve(request.id, approver=_forgeries(request, key)[forgery])
        assert [r.id for r in rt.pending_approvals()] == [request.id]
        assert paid == []
        assert _records(handle.evidence_path, "approval.granted") == []
        rt.approve(request.id, approver=CFO)
        assert await handle.result() == "paid 5000 to acct-1"
    assert paid == [("acct-1", 5000)]
    [grant] = _records(handle.evidence_path, "approval.granted")
    assert (grant["approver"], grant["approver_key"]) == ("cfo", CFO.key_id)
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_a_name_is_not_an_approval(evidence: Path, key: SigningKey) -> None:
    """``approver="cfo"`` used to be the whole approval; now it is a TypeError."""
    async with Runtime(policies=_policy(), evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(payer, "acct-1", 5000, principal="alice", ttl=30)
        request = await _held(rt)
        with pytest.raises(TypeError, match="a name proves nothing"):
            rt.approve(request.id, approver="cfo")  # type: ignore[arg-type]
        assert rt.pending_approvals() == [request]
        rt.deny(request.id, approver=CFO, reason="not today")
        with pytest.raises(PolicyDenied):
            await handle.result()
    assert paid == []


async def test_a_grant_for_one_run_cannot_release_another(evidence: Path, key: SigningKey) -> None:
    """A grant replayed against a second held payment (same tool, same arguments) is
    refused: it names the other request and its action digest."""
    async with Runtime(policies=_policy(), evidence_dir=evidence, key=key) as rt:
        first = await rt.start(payer, "acct-1", 5000, principal="alice", ttl=30)
        one = await _held(rt)
        grant = sign_grant(CFO, request=one.id, action=one.action_digest, decision="granted")
        rt.approve(one.id, approver=grant)
        await first.result()
        second = await rt.start(payer, "acct-1", 5000, principal="alice", ttl=30)
        two = await _held(rt)
        with pytest.raises((SignatureInvalid, KeyError)):
            rt.approve(two.id, approver=grant)
        assert rt.pending_approvals() == [two]
        rt.deny(two.id, approver=CFO)
        with pytest.raises(PolicyDenied):
            await second.result()
    assert paid == [("acct-1", 5000)]


def test_the_verifier_refuses_an_answer_by_a_key_the_request_did_not_accept(
    key: SigningKey,
) -> None:
    """Offline: the ledger's answer must be signed by a key its request accepted, over its
    action digest, never by the runtime's own key."""
    check = ApprovalCheck(key.public_key)
    request = {
        "kind": "approval.requested",
        "request": "apr_1",
        "action_digest": "sha256:" + "a" * 64,
        "approver_keys": [CFO.public_text],
    }
    assert check.requested(request) is None

    def answer(signer: SigningKey, action: str = "sha256:" + "a" * 64) -> dict[str, Any]:
        env = sign_grant(signer, request="apr_1", action=action, decision="granted")
        return {
            "kind": "approval.granted",
            "request": "apr_1",
            "approver_key": signer.key_id,
            "envelope": env,
        }

    assert check.answered(answer(CFO)) is None
    assert "not one the request accepted" in str(check.answered(answer(OUTSIDER)))
    assert "runtime's own key" in str(check.answered(answer(key)))
    assert "not this record's" in str(check.answered(answer(CFO, "sha256:" + "b" * 64)))


def _paying_policy(cfo_key: str) -> PolicySet:
    """Payments held for the one declared approver, ``cfo``."""
    return PolicySet.from_text(
        f'version = 1\n[approvers]\ncfo = "{cfo_key}"\n'
        '[[rules]]\nid = "agents"\neffect = "allow"\nactions = ["invoke_agent"]\n'
        '[[rules]]\nid = "big-payments"\neffect = "require_approval"\ntargets = ["pay"]\n'
    )


def _approvals_cli(evidence: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``tenure approvals ... --evidence-dir EVIDENCE`` in another process."""

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "tenure", "approvals", *argv, "--evidence-dir", str(evidence)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    return cli


async def test_tenure_approvals_in_another_process_answers_with_the_approvers_key(
    evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """``tenure approvals list`` and ``approve ID --key FILE --evidence-dir DIR`` from
    another process release the step; a key the policy does not accept is refused (exit 1)
    and nothing changes."""
    cfo = generate_key_files(tmp_path / "cfo")
    outsider = generate_key_files(tmp_path / "outsider")
    cli = _approvals_cli(evidence)
    async with Runtime(
        policies=_paying_policy(cfo.public_text),
        evidence_dir=evidence,
        key=key,
        watchdog_interval=0.05,
    ) as rt:
        handle = await rt.start(payer, "acct-7", 900, principal="alice", ttl=30)
        request = await _held(rt)
        listed = await anyio.to_thread.run_sync(cli, "list")
        assert listed.returncode == 0, listed.stderr
        assert request.id in listed.stdout and '(checked): [["acct-7",900],{}]' in listed.stdout
        refused = await anyio.to_thread.run_sync(
            cli, "approve", request.id, "--key", str(outsider.path)
        )
        assert refused.returncode == 1 and "is not one the policy accepts" in refused.stderr
        assert rt.pending_approvals() == [request] and paid == []
        done = await anyio.to_thread.run_sync(cli, "approve", request.id, "--key", str(cfo.path))
        assert done.returncode == 0, done.stderr
        with anyio.fail_after(10):
            assert await handle.result() == "paid 900 to acct-7"
    [grant] = _records(handle.evidence_path, "approval.granted")
    assert grant["approver_key"] == cfo.key_id
    assert not list((evidence / ".approvals").glob("*.json"))
    assert verify_run(handle.evidence_path, key.public_key).ok


def _retold(shown: dict[str, Any], lie: str) -> dict[str, Any]:
    """The request file as code that can write the folder would rewrite it: the payment
    shown as 9 instead of 900, with as many digests redone as the attacker can."""
    small = args_encoding([["acct-7", 9], {}])
    out = dict(shown, args='{\n  "to": "acct-7",\n  "amount": 9\n}')
    if lie == "rendering":
        return out
    out["args_encoding"] = small
    if lie == "arguments":
        return out
    out["args_digest"] = args_digest_of(small)
    if lie == "arguments and their digest":
        return out
    out["action_digest"] = action_digest(
        request=out["id"],
        run=out["run_id"],
        step=out["step"],
        principal=out["principal"],
        action=out["action"],
        target=out["target"],
        args=out["args_digest"],
        rule=out["rule_id"],
        policy=out["policy_digest"],
    )
    return out


@pytest.mark.parametrize(
    "lie", ["rendering", "arguments", "arguments and their digest", "every digest redone"]
)
async def test_a_request_file_retold_to_look_harmless_never_gets_the_harmful_call_signed(
    evidence: Path, key: SigningKey, tmp_path: Path, lie: str
) -> None:
    """The attack: code that can write ``.approvals`` rewrites a waiting request so a 900
    payment reads as 9, hoping the approver signs the real one. What ``list`` shows is
    checked against the digests; a file that does not match is not signed; a file whose
    digests were all redone gets a grant for the harmless call, which releases nothing."""
    cfo = generate_key_files(tmp_path / "cfo")
    cli = _approvals_cli(evidence)
    async with Runtime(
        policies=_paying_policy(cfo.public_text),
        evidence_dir=evidence,
        key=key,
        watchdog_interval=0.05,
    ) as rt:
        handle = await rt.start(payer, "acct-7", 900, principal="alice", ttl=30)
        request = await _held(rt)
        path = evidence / ".approvals" / f"{request.id}.request.json"
        path.write_text(json.dumps(_retold(json.loads(path.read_text()), lie)))
        listed = await anyio.to_thread.run_sync(cli, "list")
        answered = await anyio.to_thread.run_sync(
            cli, "approve", request.id, "--key", str(cfo.path)
        )
        if lie == "rendering":
            # The rendering is not what is shown: the checked arguments are the real ones.
            assert '(checked): [["acct-7",900],{}]' in listed.stdout, listed.stdout
            assert answered.returncode == 0, answered.stderr
            with anyio.fail_after(10):
                assert await handle.result() == "paid 900 to acct-7"
            return
        if lie == "every digest redone":
            assert '(checked): [["acct-7",9],{}]' in listed.stdout, listed.stdout
            assert answered.returncode == 0, answered.stderr  # signed: the harmless call
            grant = evidence / ".approvals" / f"{request.id}.grant.json"
            with anyio.fail_after(10):
                while True:  # another process's file: the runtime takes it within a poll
                    if not grant.exists():
                        break
                    await anyio.sleep(0.01)
        else:
            assert "NOT SIGNABLE" in listed.stdout and "do not match" in listed.stdout
            assert answered.returncode == 1
            assert f"{request.id} not signed: its" in answered.stderr
            assert not (evidence / ".approvals" / f"{request.id}.grant.json").exists()
        assert rt.pending_approvals() == [request] and paid == []
        assert _records(handle.evidence_path, "approval.granted") == []
        handle.cancel()


def test_request_files_that_lie_about_their_fields_are_listed_not_believed(
    tmp_path: Path,
) -> None:
    """The attack: request files planted in ``.approvals`` with fields of the wrong type
    (a string timestamp, a list for an id, no digests) or escape sequences for the
    approver's terminal. ``list`` neither crashes, nor shows them as signable, nor prints
    a control code; ``approve`` signs none of them."""
    folder = tmp_path / ".approvals"
    folder.mkdir()
    planted = {
        "apr_00000000000000aa": {"id": "apr_00000000000000aa", "requested_at_us": "soon"},
        "apr_00000000000000bb": {"id": "apr_00000000000000bb", "requested_at_us": 5},
        "apr_00000000000000cc": {"id": ["apr_00000000000000cc"], "requested_at_us": 1},
        # Escape sequences that would move up a line and erase it (the NOT SIGNABLE above).
        "apr_00000000000000ee": {
            "id": "apr_00000000000000ee",
            "requested_at_us": 9,
            "principal": "\x1b[1A\x1b[2Kalice",
        },
    }
    for name, body in planted.items():
        (folder / f"{name}.request.json").write_text(json.dumps(body))
    (folder / "apr_00000000000000dd.request.json").write_bytes(b"\xff not json")
    approver = generate_key_files(tmp_path / "approver")

    cli = _approvals_cli(tmp_path)
    listed = cli("list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("apr_")] == [
        "apr_00000000000000aa",
        "apr_00000000000000bb",
        "apr_00000000000000ee",
    ]
    assert listed.stdout.count("NOT SIGNABLE: the request lacks or mistypes") == 3
    assert "\x1b" not in listed.stdout and "\\x1b[1A\\x1b[2Kalice" in listed.stdout
    for name in ("apr_00000000000000aa", "apr_00000000000000bb"):
        answered = cli("approve", name, "--key", str(approver.path))
        assert answered.returncode == 1 and "not signed" in answered.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.request.json" for n in planted] + ["apr_00000000000000dd.request.json"]
    )

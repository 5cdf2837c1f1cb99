"""Attacks on leases: forged, altered, re-signed, replayed elsewhere, widened, revoked.

Each test proves the attack is rejected with :class:`SignatureInvalid` (or refused) *and*
that the authority's trusted state (its key, its revocations, the genuine lease) is
unchanged.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from tenure import (
    Context,
    PolicyDenied,
    Runtime,
    SignatureInvalid,
    SigningKey,
    agent,
)
from tenure.crypto import canonical, sign_envelope
from tenure.evidence import LEASE_PAYLOAD_TYPE
from tenure.evidence._format import LEASE_BATCH_PAYLOAD_TYPE
from tenure.policies import PolicySet
from tenure.runtime.kernel._authority import LeaseAuthority
from tenure.runtime.kernel._lease import Lease, wall_us

HOUR_US = 3_600_000_000


def _root(authority: LeaseAuthority, scopes: set[str] | None = None) -> Lease:
    now = wall_us()
    return authority.issue_root(
        run_id="run_1",
        principal="alice",
        subject="agent:root",
        scopes=scopes or {"read", "write"},
        expires_us=now + HOUR_US,
        hard_deadline_us=now + 2 * HOUR_US,
        policy="sha256:" + "0" * 64,
        attestation="sha256:" + "1" * 64,
        epoch=0,
    )


def _claims(lease: Lease) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(lease.envelope["payload"])))


def _with_payload(envelope: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
    forged = dict(envelope)
    forged["payload"] = base64.b64encode(canonical(claims)).decode()
    return forged


@pytest.fixture
def authority() -> LeaseAuthority:
    return LeaseAuthority(SigningKey.generate(), "tenure:test")


def _assert_trusted_state_unchanged(authority: LeaseAuthority, genuine: Lease, key_id: str) -> None:
    assert authority.key.key_id == key_id
    assert authority.verify(genuine.envelope).digest == genuine.digest
    assert not authority.is_revoked(genuine.id)


def test_forged_lease_signed_by_another_key_is_rejected(authority: LeaseAuthority) -> None:
    genuine = _root(authority)
    key_id = authority.key.key_id
    forger = LeaseAuthority(SigningKey.generate(), authority.audience)
    forged = _root(forger)
    with pytest.raises(SignatureInvalid) as info:
        authority.verify(forged.envelope)
    assert info.value.check == "lease.signature"
    _assert_trusted_state_unchanged(authority, genuine, key_id)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exp", "extend"),
        ("scopes", ["admin", "read", "write"]),
        ("principal", "mallory"),
        ("run", "run_other"),
        ("parent", "sha256:" + "f" * 64),
        ("epoch", 99),
    ],
)
def test_altered_claim_with_the_original_signature_is_rejected(
    authority: LeaseAuthority, field: str, value: Any
) -> None:
    """Every security-relevant claim is covered by the signature (expiry included)."""
    genuine = _root(authority)
    claims = _claims(genuine)
    claims[field] = claims["exp"] + HOUR_US if value == "extend" else value
    with pytest.raises(SignatureInvalid) as info:
        authority.verify(_with_payload(genuine.envelope, claims))
    assert info.value.check == "lease.signature"
    _assert_trusted_state_unchanged(authority, genuine, authority.key.key_id)


def test_altered_signature_is_rejected(authority: LeaseAuthority) -> None:
    genuine = _root(authority)
    env = json.loads(json.dumps(genuine.envelope))
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureInvalid):
        authority.verify(env)
    _assert_trusted_state_unchanged(authority, genuine, authority.key.key_id)


def test_lease_replayed_to_another_runtime_is_rejected(authority: LeaseAuthority) -> None:
    """Same key, other audience: a lease minted for one runtime is worthless to another."""
    genuine = _root(authority)
    other = LeaseAuthority(authority.key, "tenure:someone-else")
    with pytest.raises(SignatureInvalid) as info:
        other.verify(genuine.envelope)
    assert info.value.check == "lease.audience"


def test_wrong_payload_type_is_rejected(authority: LeaseAuthority) -> None:
    genuine = _root(authority)
    env = sign_envelope(authority.key, "application/json", genuine.payload)
    with pytest.raises(SignatureInvalid):
        authority.verify(env)


def test_widened_child_is_refused_at_issue_and_at_verification(
    authority: LeaseAuthority,
) -> None:
    parent = _root(authority, {"read"})
    with pytest.raises(PolicyDenied) as info:
        authority.issue_child(
            parent, subject="agent:c", scopes={"read", "write"}, expires_us=wall_us() + HOUR_US
        )
    assert info.value.check == "lease.narrowing"
    # A child signed by the right key but claiming more than its parent: refused too.
    child = authority.issue_child(
        parent, subject="agent:c", scopes={"read"}, expires_us=wall_us() + HOUR_US
    )
    claims = _claims(child)
    claims["scopes"] = ["read", "write"]
    claims["exp"] = parent.claims.exp + 1
    resigned = sign_envelope(authority.key, LEASE_PAYLOAD_TYPE, canonical(claims))
    with pytest.raises(SignatureInvalid) as sinfo:
        authority.verify(resigned, parent=parent)
    assert sinfo.value.check == "lease.narrowing"
    assert "widen" in str(sinfo.value) and "later than the parent" in str(sinfo.value)


def test_child_expiry_never_outlives_its_parent(authority: LeaseAuthority) -> None:
    parent = _root(authority)
    child = authority.issue_child(
        parent, subject="agent:c", scopes={"read"}, expires_us=parent.claims.exp + HOUR_US
    )
    assert child.claims.exp == parent.claims.exp
    assert authority.verify(child.envelope, parent=parent).id == child.id


def test_revoked_lease_is_never_renewed_nor_delegated_from(authority: LeaseAuthority) -> None:
    parent = _root(authority)
    child = authority.issue_child(
        parent, subject="agent:c", scopes={"read"}, expires_us=wall_us() + HOUR_US
    )
    assert set(authority.revoke(parent.id)) == {parent.id, child.id}
    with pytest.raises(PolicyDenied):
        authority.renew(
            child, expires_us=wall_us() + HOUR_US, hard_deadline_us=wall_us() + 2 * HOUR_US
        )
    with pytest.raises(PolicyDenied):
        authority.issue_child(
            parent, subject="agent:d", scopes={"read"}, expires_us=wall_us() + HOUR_US
        )


def test_renewal_never_passes_the_runs_hard_deadline(authority: LeaseAuthority) -> None:
    lease = _root(authority)
    deadline = wall_us() + 1_000_000
    renewed = authority.renew(lease, expires_us=wall_us() + HOUR_US, hard_deadline_us=deadline)
    assert renewed.claims.exp == deadline
    assert renewed.claims.gen == lease.claims.gen + 1 and renewed.id == lease.id


async def test_a_live_lease_altered_in_memory_stops_the_run_at_reverification(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The watchdog re-verifies live leases' signatures: tampering in memory is caught."""
    ready = anyio.Event()
    steps_after_stop = 0
    handles: list[Any] = []

    @agent
    async def worker(ctx: Context) -> None:
        nonlocal steps_after_stop
        ready.set()
        while True:
            await anyio.sleep(0.005)
            if handles[0]._run.stop is not None:
                steps_after_stop += 1

    async with Runtime(
        policies=allow_all, evidence_dir=evidence, key=SigningKey.generate(), watchdog_interval=0.01
    ) as rt:
        handle = await rt.start(worker, principal="alice", ttl=30)
        handles.append(handle)
        await ready.wait()
        state = next(iter(handle._run.leases.values()))
        claims = _claims(state.lease)
        claims["scopes"] = ["admin"]
        forged_env = _with_payload(state.lease.envelope, claims)
        state.lease = Lease._create(state.lease.claims, state.lease.payload, forged_env)
        with pytest.raises(SignatureInvalid) as info:
            await handle.result()
    assert info.value.check == "lease.signature"
    assert info.value.run_id == handle.run_id
    assert steps_after_stop == 0


def _batched_pair(authority: LeaseAuthority) -> tuple[Lease, Lease]:
    root = _root(authority)
    drafts = [
        authority.draft_child(
            root, subject=f"agent:c{i}", scopes={"read"}, expires_us=root.claims.exp
        )
        for i in range(2)
    ]
    (first, second), _ = authority.sign_batch("run_1", drafts)
    return first, second


def test_a_batch_digest_slipped_in_after_its_signature_was_checked_is_rejected(
    authority: LeaseAuthority,
) -> None:
    """The batch's signature is verified once; its signed digests are compared every time."""
    first, second = _batched_pair(authority)
    authority.verify_lease(first)  # verified: remembered for this batch and envelope
    batch = first.batch
    assert batch is not None
    genuine = batch.digests
    object.__setattr__(batch, "digests", genuine | {"sha256:" + "f" * 64})
    with pytest.raises(SignatureInvalid) as info:
        authority.verify_lease(second)
    assert info.value.check == "lease.signature"
    object.__setattr__(batch, "digests", genuine)
    authority.verify_lease(second)  # the genuine batch still verifies: nothing was trusted
    _assert_trusted_state_unchanged(authority, first, authority.key.key_id)


def test_a_batch_envelope_swapped_after_its_signature_was_checked_is_verified_again(
    authority: LeaseAuthority,
) -> None:
    """Another envelope in place of the verified one is checked in full, and refused."""
    first, second = _batched_pair(authority)
    authority.verify_lease(first)
    batch = first.batch
    assert batch is not None
    other = LeaseAuthority(SigningKey.generate(), "tenure:test")
    signed = sign_envelope(other.key, LEASE_BATCH_PAYLOAD_TYPE, batch.payload)
    genuine = batch._envelope
    object.__setattr__(batch, "_envelope", orjson.dumps(signed))
    with pytest.raises(SignatureInvalid) as info:
        authority.verify_lease(second)
    assert info.value.check == "lease.signature"
    object.__setattr__(batch, "_envelope", genuine)
    authority.verify_lease(second)
    _assert_trusted_state_unchanged(authority, first, authority.key.key_id)


def test_a_batch_checked_under_a_rotated_key_is_verified_again(
    authority: LeaseAuthority,
) -> None:
    """A signature verified under the old key proves nothing under the new one."""
    first, second = _batched_pair(authority)
    authority.verify_lease(first)
    old = authority.key
    authority.rotate_key(SigningKey.generate())
    with pytest.raises(SignatureInvalid) as info:
        authority.verify_lease(second)
    assert info.value.check == "lease.signature"
    authority.rotate_key(old)
    authority.verify_lease(second)


def test_claims_of_a_batched_lease_altered_in_memory_never_pass_for_its_signed_payload(
    authority: LeaseAuthority,
) -> None:
    """A batch-signed lease keeps no payload: altered claims re-encode to other bytes, which
    are refused (no payload, no renewal, no re-verification, no child), never signed."""
    first, second = _batched_pair(authority)
    genuine = first.payload
    widened = {**first.claims.__dict__, "scopes": ("admin", "read")}
    object.__setattr__(first.claims, "__dict__", widened)
    with pytest.raises(SignatureInvalid) as info:
        _ = first.payload
    assert info.value.check == "lease.signature"
    with pytest.raises(SignatureInvalid):
        authority.draft_renewal(
            first, expires_us=first.claims.exp, hard_deadline_us=first.claims.exp
        )
    with pytest.raises(SignatureInvalid):
        authority.verify_lease(first)
    with pytest.raises(SignatureInvalid):
        authority.draft_child(
            first, subject="agent:x", scopes={"admin"}, expires_us=first.claims.exp
        )
    authority.verify_lease(second)  # its sibling, in the same batch, is untouched
    assert second.payload != genuine and json.loads(genuine)["scopes"] == ["read"]

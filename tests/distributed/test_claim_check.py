"""The claim-time checks of a delegated task, one forgery at a time (no server needed):
every one is refused with the check it failed, naming the task."""

from __future__ import annotations

from typing import Any

import pytest

from tenure import LeaseRevoked, SignatureInvalid
from tenure.crypto import SigningKey, b64e
from tenure.evidence._certs import certify
from tenure.runtime.backends import ClaimedTask
from tenure.runtime.backends._claim_check import (
    chain_ids,
    refuse_revoked,
    trusted_issuer,
    verify_chain,
)
from tenure.runtime.backends._delegate import _travelling
from tenure.runtime.kernel._authority import LeaseAuthority
from tenure.runtime.kernel._lease import Lease, LeaseClaims, wall_us

RUN = "run_0123456789abcdef"


def _chain(key: SigningKey, run: str = RUN) -> tuple[LeaseAuthority, Lease, Lease]:
    authority = LeaseAuthority(key, "tenure:test")
    now = wall_us()
    root = authority.issue_root(
        run_id=run,
        principal="alice",
        subject="planner",
        scopes=["a", "b"],
        expires_us=now + 60_000_000,
        hard_deadline_us=now + 60_000_000,
        policy="sha256:" + "0" * 64,
        attestation="sha256:" + "0" * 64,
        epoch=0,
    )
    child = authority.issue_child(root, subject="worker", scopes=["a"], expires_us=now + 9_000_000)
    return authority, root, child


def _task(
    chain: list[Lease], key: SigningKey, *, registered: SigningKey | None = None, **issuer: Any
) -> ClaimedTask:
    payload = {
        "chain": [lease.envelope for lease in chain],
        "lease_id": chain[-1].claims.lid,
        "issuer": {"key": key.key_id, "pubkey": b64e(key.public_raw), **issuer},
        "upstream": ["lease_upstream", 7],
    }
    reg = registered if registered is not None else key
    return ClaimedTask("task_1", "pool", RUN, payload, "m_1", {"pubkey": b64e(reg.public_raw)}, 0)


def _refused(task: ClaimedTask, key: SigningKey) -> SignatureInvalid:
    with pytest.raises(SignatureInvalid) as caught:
        verify_chain(task, key.public_key)
    assert "task task_1" in caught.value.reason
    return caught.value


def test_a_sound_chain_verifies_root_first_and_names_every_revocable_id() -> None:
    key = SigningKey.generate()
    _, root, child = _chain(key)
    task = _task([root, child], key)
    chain = verify_chain(task, trusted_issuer(task, None))
    assert [c["lid"] for c in chain] == [root.claims.lid, child.claims.lid]
    ids = chain_ids(task, chain)
    assert ids == {RUN, root.claims.lid, child.claims.lid, "lease_upstream"}
    refuse_revoked(task, ids, {"something-else"})
    with pytest.raises(LeaseRevoked, match="lease_upstream was revoked"):
        refuse_revoked(task, ids, {"lease_upstream"})


def test_without_the_operator_key_only_the_registered_key_counts() -> None:
    key, registered = SigningKey.generate(), SigningKey.generate()
    _, root, child = _chain(key)
    task = _task([root, child], key, registered=registered)
    trusted = trusted_issuer(task, None)
    assert trusted.public_bytes_raw() == registered.public_raw  # not the payload's key
    _refused(task, registered)
    bare = ClaimedTask("task_1", "pool", RUN, task.payload, "m_1", {"pubkey": "not base64!"})
    with pytest.raises(SignatureInvalid, match="no key is registered"):
        trusted_issuer(bare, None)


def test_with_the_operator_key_only_a_certificate_for_the_signing_key_counts() -> None:
    operator, key, other = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    _, root, child = _chain(key)
    chain = [root, child]
    with pytest.raises(SignatureInvalid, match="carries no certificate"):
        trusted_issuer(_task(chain, key), operator.public_key)
    for_other = certify(operator, other.public_key, "api")
    with pytest.raises(SignatureInvalid, match="is for another key"):
        trusted_issuer(_task(chain, key, certificate=for_other), operator.public_key)
    rogue = certify(SigningKey.generate(), key.public_key, "api")
    with pytest.raises(SignatureInvalid, match="not one the operator certified"):
        trusted_issuer(_task(chain, key, certificate=rogue), operator.public_key)
    good = certify(operator, key.public_key, "api")
    trusted = trusted_issuer(_task(chain, key, certificate=good), operator.public_key)
    assert trusted.public_bytes_raw() == key.public_raw
    # The registered certificate counts too (a payload naming no key of its own).
    task = _task(chain, key)
    registered = ClaimedTask(
        task.id,
        task.pool,
        task.run_id,
        {**task.payload, "issuer": {}},
        task.enqueued_by,
        {"pubkey": b64e(key.public_raw), "certificate": good},
    )
    assert trusted_issuer(registered, operator.public_key).public_bytes_raw() == key.public_raw


def test_a_chain_that_is_missing_out_of_order_or_of_another_run_is_refused() -> None:
    key = SigningKey.generate()
    _, root, child = _chain(key)
    empty = _task([root, child], key)
    no_chain = ClaimedTask("task_1", "pool", RUN, {**empty.payload, "chain": []})
    assert _refused(no_chain, key).check == "lease.chain"
    assert _refused(_task([child], key), key).check == "lease.chain"  # not from the root
    assert _refused(_task([child, root], key), key).check == "lease.chain"
    _, other_root, other_child = _chain(key, run="run_ffffffffffffffff")
    assert _refused(_task([other_root, other_child], key), key).check == "lease.binding"
    _, unrelated, _ = _chain(key)
    assert _refused(_task([unrelated, child], key), key).check == "lease.chain"
    named = _task([root, child], key)
    wrong = ClaimedTask("task_1", "pool", RUN, {**named.payload, "lease_id": "x"})
    assert _refused(wrong, key).check == "lease.binding"
    assert _refused(_task([root, child], key), SigningKey.generate()).check == "lease.signature"


def test_a_child_signed_wider_than_its_parent_is_refused() -> None:
    key = SigningKey.generate()
    authority, root, child = _chain(key)
    wider = authority.sign_one(
        LeaseClaims.model_construct(**{**child.claims.model_dump(), "scopes": ("a", "b", "c")})
    )
    assert _refused(_task([root, wider], key), key).check == "lease.chain"


def test_a_chain_of_batch_signed_leases_travels_as_single_envelopes_a_worker_verifies() -> None:
    """Leases signed in a batch (a fan-out's) are sent signed on their own: the worker's
    check is unchanged; the batch form itself (no signature of its own) is refused."""
    key = SigningKey.generate()
    authority, root, child = _chain(key)
    [batched_root], _ = authority.sign_batch(RUN, [root.claims])
    [batched_child], _ = authority.sign_batch(RUN, [child.claims])
    assert batched_root.digest == root.digest  # the same lease, signed another way
    named = _task([root, child], key)
    travelled = [_travelling(lease, key) for lease in (batched_root, batched_child)]
    sent = ClaimedTask(
        "task_1", "pool", RUN, {**named.payload, "chain": travelled}, "m_1", named.registered, 0
    )
    chain = verify_chain(sent, trusted_issuer(sent, None))
    assert [c["lid"] for c in chain] == [root.claims.lid, child.claims.lid]
    assert _refused(_task([batched_root, batched_child], key), key).check == "lease.signature"

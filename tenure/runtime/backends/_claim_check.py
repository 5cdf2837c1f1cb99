"""What a worker checks of a claimed task before any of it runs (fail closed).

A task row is only as trustworthy as its signatures: whoever can write to the queue table
can put any payload there, a public key of their own included. So a worker takes the key
that must have signed the task's leases from somewhere the payload does not control:

- with the operator's public key (``tenure worker --operator-key``): the issuer key must
  carry the operator's certificate (``tenure keys certify``), the one in the payload or
  the one the enqueuing member registered;
- without it (one operator, one host or a trusted database): the key the enqueuing member
  registered in the backend when it joined (the claim answers it, read in the same
  statement), never the payload's copy.

Under that key every lease of the chain, from the delegating run's root lease down to the
delegated one, must verify, name the task's run, bind the one before it (``parent_lid``
and the exact generation's digest) and only narrow its scopes; the last must be the lease
the payload names. Revocations are checked after every governance event up to the
revision the claim answered was applied: the run, each lease of the chain, and the leases
a part of a run was itself delegated under (``upstream``) — none may be revoked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..._errors import LeaseRevoked, SignatureInvalid
from ...crypto import b64d, digest, verify_envelope
from ...evidence._certs import check_certificate
from ...evidence._format import LEASE_PAYLOAD_TYPE
from ...evidence._reader import loads_bounded
from ._types import ClaimedTask

__all__ = ["chain_ids", "refuse_revoked", "trusted_issuer", "verify_chain"]

_MAX_CHAIN = 64


def _refuse(task: ClaimedTask, check: str, why: str) -> SignatureInvalid:
    return SignatureInvalid(
        f"task {task.id} (run {task.run_id}, queued by {task.enqueued_by or 'nobody'}) is "
        f"refused: {why}",
        check=check,
        source="worker",
    )


def _raw_key(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = b64d(value)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def trusted_issuer(task: ClaimedTask, operator: Ed25519PublicKey | None) -> Ed25519PublicKey:
    """The key the task's leases must verify under (see the module docstring)."""
    issuer = task.payload.get("issuer")
    issuer = issuer if isinstance(issuer, Mapping) else {}
    registered = _raw_key(task.registered.get("pubkey"))
    if operator is None:
        if registered is None:
            raise _refuse(
                task,
                "lease.issuer",
                "no key is registered in the backend for the member that queued it",
            )
        return Ed25519PublicKey.from_public_bytes(registered)
    claimed = _raw_key(issuer.get("pubkey"))
    problems = []
    for certificate in (issuer.get("certificate"), task.registered.get("certificate")):
        if certificate is None:
            continue
        try:
            name, raw = check_certificate(certificate, operator)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if raw == claimed or (claimed is None and raw == registered):
            return Ed25519PublicKey.from_public_bytes(raw)
        problems.append(f"the certificate of {name!r} is for another key")
    why = "; ".join(problems) or "its issuer key carries no certificate"
    raise _refuse(task, "lease.issuer", f"its issuer key is not one the operator certified ({why})")


def verify_chain(task: ClaimedTask, key: Ed25519PublicKey) -> list[dict[str, Any]]:
    """The claims of every lease of the task's chain, root first (``SignatureInvalid``)."""
    p = task.payload
    envelopes = p.get("chain")
    if not isinstance(envelopes, Sequence) or not 0 < len(envelopes) <= _MAX_CHAIN:
        raise _refuse(task, "lease.chain", "it carries no lease chain")
    chain: list[dict[str, Any]] = []
    for n, envelope in enumerate(envelopes):
        try:
            payload = verify_envelope(envelope, key, LEASE_PAYLOAD_TYPE)
            claims = loads_bounded(payload)
        except ValueError as exc:
            raise _refuse(task, "lease.signature", f"lease {n} of its chain: {exc}") from None
        if not isinstance(claims, dict) or claims.get("run") != task.run_id:
            raise _refuse(task, "lease.binding", f"lease {n} of its chain is not for its run")
        scopes = claims.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _refuse(task, "lease.chain", f"lease {n} of its chain has no scope list")
        if chain:
            parent = chain[-1]
            if (
                claims.get("parent_lid") != parent["lid"]
                or claims.get("parent") != parent["_digest"]
            ):
                raise _refuse(task, "lease.chain", f"lease {n} does not bind lease {n - 1}")
            if not set(scopes) <= set(parent["scopes"]):
                raise _refuse(task, "lease.chain", f"lease {n} widens the scopes of its parent")
        elif claims.get("parent_lid") is not None:
            raise _refuse(task, "lease.chain", "its chain does not start at the run's root lease")
        if not isinstance(claims.get("lid"), str):
            raise _refuse(task, "lease.chain", f"lease {n} of its chain has no id")
        chain.append({**claims, "_digest": digest(payload)})
    if chain[-1]["lid"] != p.get("lease_id"):
        raise _refuse(task, "lease.binding", "its delegated lease is not the one it names")
    return chain


def chain_ids(task: ClaimedTask, chain: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Every id whose revocation takes this task's authority back."""
    upstream = task.payload.get("upstream")
    extra = [u for u in upstream if isinstance(u, str)] if isinstance(upstream, list) else []
    return frozenset({task.run_id, *(c["lid"] for c in chain), *extra})


def refuse_revoked(task: ClaimedTask, ids: frozenset[str], revoked: set[str]) -> None:
    """``LeaseRevoked`` when the run or any lease the task holds under was revoked."""
    hit = sorted(ids & revoked)
    if hit:
        raise LeaseRevoked(
            f"task {task.id}: {hit[0]} was revoked before the task was claimed",
            check="lease.revoked",
            source="worker",
        )

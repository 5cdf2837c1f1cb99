"""Lease batches: one Ed25519 signature over the leases issued (or renewed) together.

A run issues leases in bursts (a fan-out of thousands of agents); one signature per lease
costs more than everything else a step does. A *lease batch* signs many at once: a DSSE
envelope (:data:`~._format.LEASE_BATCH_PAYLOAD_TYPE`) whose payload is the RFC 8785 object
``{"leases": ["sha256:<hex>", ...], "run": <run id>, "v": 1}``, one entry per lease: the
digest of the lease's payload (its canonical claims, exactly the bytes a single-lease DSSE
envelope would carry). A lease is signed by a batch exactly when its digest is listed there;
its identity (the digest a child binds as ``parent``) is the same either way.

Invariants:

- A batch belongs to one run and lists each digest once: :func:`open_lease_batch` refuses
  an empty list, duplicates, another run, and any payload that is not the canonical form
  of such an object.
- Verification order, as DSSE asks: signature, payload type, then parsing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import canonical_fast, verify_envelope
from ._format import LEASE_BATCH, LEASE_BATCH_PAYLOAD_TYPE, LEASE_ISSUED, LEASE_RENEWED
from ._reader import loads_bounded

__all__ = [
    "MAX_BATCH",
    "LeaseTree",
    "decode_payloads",
    "lease_batch_payload",
    "leases_of",
    "open_lease_batch",
]

#: leases per batch, at most (a batch record of this many stays far below the record bound)
MAX_BATCH: Final = 1024

_HEX = frozenset("0123456789abcdef")


def lease_batch_payload(run_id: str, digests: Sequence[str]) -> bytes:
    """The canonical bytes a batch signs (``digests``: ``"sha256:<hex>"`` of each payload).

    Plain strings (what the authority makes) are written directly, members in canonical
    order, without the generic encoder's domain check of every digest; anything else goes
    through it (``canonical_fast``), which represents it or refuses.
    """
    listed = list(digests)
    body = {"leases": listed, "run": run_id, "v": 1}
    if type(run_id) is str and all(type(d) is str for d in listed):
        return orjson.dumps(body)
    return canonical_fast(body)


def _is_digest(d: object) -> bool:
    return isinstance(d, str) and len(d) == 71 and d.startswith("sha256:") and set(d[7:]) <= _HEX


def open_lease_batch(
    envelope: Any, key: Ed25519PublicKey, run_id: str | None
) -> tuple[str, list[str]]:
    """Verify a batch envelope under ``key``; return its run and the digests it signs.

    ``run_id``: the run the batch must belong to (``None``: any, the caller checks).
    Raises ``ValueError`` naming the check that failed.
    """
    payload = verify_envelope(envelope, key, LEASE_BATCH_PAYLOAD_TYPE)
    body = loads_bounded(payload)
    if not isinstance(body, dict) or body.get("v") != 1:
        raise ValueError("lease batch: the payload is not a version 1 batch object")
    digests = body.get("leases")
    if not isinstance(digests, list) or not digests or not all(map(_is_digest, digests)):
        raise ValueError("lease batch: 'leases' must be a non-empty list of sha256 digests")
    if len(set(digests)) != len(digests):
        raise ValueError("lease batch: a lease digest is listed twice")
    run = body.get("run")
    if not isinstance(run, str) or (run_id is not None and run != run_id):
        raise ValueError(f"lease batch is for run {run!r}, not {run_id!r}")
    if canonical_fast(body) != payload:
        raise ValueError("lease batch: the payload is not in RFC 8785 canonical form")
    return run, digests


def decode_payloads(payloads: Any) -> list[bytes]:
    """The lease payloads of a batch record (base64 strings); ``ValueError`` if malformed."""
    if not isinstance(payloads, list):
        raise ValueError("lease batch: 'leases' must be a list of base64 payloads")
    out = []
    for k, p in enumerate(payloads):
        if not isinstance(p, str):
            raise ValueError(f"lease batch: payload {k} is not a base64 string")
        try:
            out.append(base64.b64decode(p, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"lease batch: payload {k} is not valid base64") from exc
    return out


def leases_of(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claims of the leases a record issues or renews, *unverified* (for views).

    ``lease.issued`` / ``lease.renewed``: the claims in its envelope; ``lease.batch``: those
    of each payload. Anything else, or anything malformed, gives none (the verifier is what
    judges the evidence; a view only shows it).
    """
    kind = rec.get("kind")
    payloads: list[Any] = []
    if kind in (LEASE_ISSUED, LEASE_RENEWED):
        envelope = rec.get("envelope")
        if isinstance(envelope, dict):
            payloads = [envelope.get("payload")]
    elif kind == LEASE_BATCH and isinstance(rec.get("leases"), list):
        payloads = rec["leases"]
    out = []
    for p in payloads:
        if not isinstance(p, str):
            continue
        try:
            claims = loads_bounded(base64.b64decode(p, validate=True))
        except (binascii.Error, TypeError, ValueError):
            continue
        if isinstance(claims, dict):
            out.append(claims)
    return out


class LeaseTree:
    """Which leases were issued under which, from a ledger's lease records (for views: a
    revocation record no longer lists the descendants it revoked)."""

    def __init__(self) -> None:
        self._children: dict[str, list[str]] = {}

    def note(self, rec: Mapping[str, Any]) -> None:
        """Take in the leases ``rec`` issues (renewals change no parent link)."""
        if rec.get("kind") == LEASE_BATCH and rec.get("purpose") != "issued":
            return
        for claims in leases_of(rec):
            lid, parent = claims.get("lid"), claims.get("parent_lid")
            if isinstance(lid, str) and isinstance(parent, str):
                self._children.setdefault(parent, []).append(lid)

    def revoked_with(self, rec: Mapping[str, Any]) -> int:
        """How many leases a ``lease.revoked`` record revoked besides its own lease: those
        its ``cascade`` lists (older writers; the lease itself may be among them) or those
        descending from it by the parent links noted so far, whichever is more."""
        lid = rec.get("lease")
        if not isinstance(lid, str):
            return 0
        cascade = rec.get("cascade")
        listed = {c for c in cascade if isinstance(c, str)} if isinstance(cascade, list) else set()
        return max(len(listed - {lid}), self.descendants(lid))

    def descendants(self, lid: str) -> int:
        """How many leases noted so far descend from ``lid``."""
        count, stack, seen = 0, [lid], {lid}
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    count += 1
                    stack.append(child)
        return count

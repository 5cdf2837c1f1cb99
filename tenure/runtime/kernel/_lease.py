"""Signed leases: the claims, the lease object, and how its signature is carried.

A lease is a capability: claims canonicalized with RFC 8785 (the lease's *payload*) and
signed with Ed25519. Every security-relevant claim (run, parent, principal, subject,
scopes, times, policy and attestation digests, epoch, nonce) is inside the signed payload;
nothing that decides authority lives outside it. The signature comes in one of two forms:

- a DSSE envelope of its own (``application/vnd.tenure.lease.v1+json``): the form a lease
  has when it travels to another process (a delegation to a pool);
- a place in a :class:`LeaseBatch`: one DSSE envelope signing the digests of the payloads
  of every lease issued (or renewed) together (:mod:`tenure.evidence._batch`). One
  signature then covers a whole fan-out's leases; each is still signed before its task
  runs, and is verified by its digest's presence in the signed list.

The lease's identity (``digest``: SHA-256 of the payload, what a child binds as its parent)
does not depend on the form. :class:`~._authority.LeaseAuthority` makes and checks leases.

Times are integers in microseconds since the Unix epoch (within 2**53, so RFC 8785 keeps
them exact). Locally, expiry is enforced against ``time.monotonic`` deadlines so that a
wall-clock jump can neither extend nor cut a live lease; wall times are for the evidence.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from ..._errors import SignatureInvalid
from ..._util import NoPublicConstructor, final
from ...crypto import b64e, canonical, digest
from ...evidence._format import LEASE_PAYLOAD_TYPE

__all__ = [
    "Lease",
    "LeaseBatch",
    "LeaseClaims",
    "check_intact",
    "check_narrowing",
    "claims_json",
    "claims_payload",
    "decode_claims",
    "new_claims",
    "wall_us",
]


def _held(data: bytes) -> bytes:
    """``data`` copied at its exact size, for bytes a lease keeps for its lifetime.

    orjson's output keeps the buffer it was written into (8 KiB at least, more for a
    batch's envelope), which thousands of live leases would keep too.
    """
    return memoryview(data).tobytes()


_SCOPE_SETS: dict[tuple[str, ...], frozenset[str]] = {}
_SCOPE_SETS_KEPT: Final = 1024


def _scope_set(scopes: tuple[str, ...]) -> frozenset[str]:
    """The frozen set of ``scopes``, one shared object per distinct tuple.

    A fan-out's leases mostly grant the same scopes; one set each (216 bytes even when
    empty) was a tracked object more per live agent for the collector to walk. Frozen
    sets are immutable, so sharing them shares no authority. Only a tuple of plain strings
    is looked up: a ``str`` subclass could make itself equal to another scope.
    """
    if type(scopes) is not tuple or not all(type(s) is str for s in scopes):
        return frozenset(scopes)
    found = _SCOPE_SETS.get(scopes)
    if found is None:
        if len(_SCOPE_SETS) >= _SCOPE_SETS_KEPT:
            _SCOPE_SETS.clear()
        found = _SCOPE_SETS[scopes] = frozenset(scopes)
    return found


def wall_us() -> int:
    """Wall-clock time in integer microseconds since the epoch."""
    return time.time_ns() // 1000


class LeaseClaims(BaseModel):
    """The signed content of a lease (all of it is covered by the signature)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    v: Literal[1] = 1
    lid: str
    gen: int
    run: str
    parent: str | None
    parent_lid: str | None
    depth: int
    iss: str
    aud: str
    principal: str
    sub: str
    scopes: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    nonce: str
    policy: str
    attestation: str
    epoch: int


_CLAIM_FIELDS: Final = tuple(LeaseClaims.model_fields)
# One set for every claims object the hot path builds: a frozen model never changes it, and
# a set per lease (~1 KiB for 19 names) was a sixth of a live agent's memory.
_FIELDS_SET: Final = set(_CLAIM_FIELDS)
_MAX_SAFE_INT: Final = 2**53 - 1


def new_claims(values: dict[str, Any]) -> LeaseClaims:
    """Claims from values the authority made or took from verified claims (not validated).

    What ``LeaseClaims.model_construct`` does, for the one shape the hot path builds: every
    field given. The signed payload is checked field by field when it is read back.
    """
    claims = LeaseClaims.__new__(LeaseClaims)
    setter = object.__setattr__
    setter(claims, "__dict__", values)
    setter(claims, "__pydantic_fields_set__", _FIELDS_SET)
    setter(claims, "__pydantic_extra__", None)
    setter(claims, "__pydantic_private__", None)
    return claims


def claims_json(claims: LeaseClaims) -> dict[str, Any]:
    """The claims as the JSON object that is signed (``model_dump(mode="json")``, faster)."""
    out = {name: getattr(claims, name) for name in _CLAIM_FIELDS}
    out["scopes"] = list(claims.scopes)
    return out


def claims_payload(claims: LeaseClaims) -> bytes:
    """The signed payload of ``claims``: their RFC 8785 canonical JSON (``canonical``).

    Typed: the claims are the authority's own values (strings, ``None``, integers and a
    tuple of strings), so one flat pass checks their types and the integers' I-JSON range
    (not the generic encoder's recursive domain check); orjson sorts the members (RFC 8785
    order for ASCII names). Claims of another shape (an integer past ±(2**53-1), a value
    of another type, a ``str`` subclass) go through :func:`~tenure.crypto.canonical`, which
    represents them or refuses. The bytes are held at their exact size (:func:`_held`).
    Byte-identical to ``canonical`` of :func:`claims_json` (property-tested).
    """
    values = claims.__dict__
    if len(values) != len(_CLAIM_FIELDS):  # with every name read below: exactly the fields
        return canonical(claims_json(claims))
    for name in _CLAIM_FIELDS:
        v = values[name]
        t = type(v)
        if t is str or v is None or (t is int and -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT):
            continue
        if t is tuple and all(type(s) is str for s in v):
            continue
        return canonical(claims_json(claims))
    return _held(orjson.dumps(values, option=orjson.OPT_SORT_KEYS))


def decode_claims(payload: bytes) -> Any:
    """Parse a lease payload as a ``LeaseClaims`` input (scopes as a tuple)."""
    claims = json.loads(payload)
    if isinstance(claims, dict) and isinstance(claims.get("scopes"), list):
        claims["scopes"] = tuple(claims["scopes"])
    return claims


@final
class LeaseBatch(metaclass=NoPublicConstructor):
    """One signature over several leases' payload digests (see the module docstring).

    Immutable: the signed batch payload, the digests it lists, and its DSSE envelope.
    """

    __slots__ = ("__weakref__", "_envelope", "digests", "payload", "run")

    run: str
    payload: bytes
    digests: frozenset[str]
    _envelope: bytes

    def __init__(
        self, run: str, payload: bytes, envelope: dict[str, Any], digests: frozenset[str]
    ) -> None:
        init = object.__setattr__
        init(self, "run", run)
        init(self, "payload", _held(payload))
        init(self, "digests", digests)
        init(self, "_envelope", _held(orjson.dumps(envelope)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a LeaseBatch is immutable: cannot assign {name!r}")

    @property
    def envelope(self) -> dict[str, Any]:
        """The batch's DSSE envelope (a fresh copy)."""
        value: dict[str, Any] = orjson.loads(self._envelope)
        return value

    def __repr__(self) -> str:
        return f"<LeaseBatch run={self.run} leases={len(self.digests)}>"


@final
class Lease(metaclass=NoPublicConstructor):
    """A signed lease: claims, the exact signed payload, and its signature.

    Only a :class:`~._authority.LeaseAuthority` creates leases (issue, renew or verify);
    the lease id (``lid``) is also its revocation id, and ``digest`` (SHA-256 of the
    payload) is what a child lease binds as its parent. ``batch`` is the
    :class:`LeaseBatch` that signed it, or ``None`` for a lease with an envelope of its own.

    Immutable: every attribute is set once, at creation, and assigning or deleting one
    raises ``AttributeError`` (``ctx.lease`` is this object, so an agent assigning
    ``ctx.lease.scope_set`` used to widen its own authority). The claims are a frozen
    model of tuples; ``envelope`` hands out a copy. The runtime's scope checks read this
    object's claims-derived ``scope_set``, and a child lease is checked against the
    parent's signed claims before it is signed.
    """

    __slots__ = ("_envelope", "_payload", "batch", "claims", "digest", "scope_set")

    claims: LeaseClaims
    digest: str
    scope_set: frozenset[str]
    batch: LeaseBatch | None
    _envelope: bytes | None
    _payload: bytes | None

    def __init__(
        self,
        claims: LeaseClaims,
        payload: bytes | None,
        envelope: dict[str, Any] | None = None,
        *,
        batch: LeaseBatch | None = None,
        payload_digest: str | None = None,
    ) -> None:
        if payload_digest is None:
            if payload is None:
                raise ValueError("a lease kept without its payload needs its digest")
            payload_digest = digest(payload)
        if payload is None and batch is None:
            raise ValueError("a lease kept without its payload needs the batch that signed it")
        init = object.__setattr__
        init(self, "claims", claims)
        init(self, "_payload", payload)
        init(self, "_envelope", _held(orjson.dumps(envelope)) if envelope is not None else None)
        init(self, "batch", batch)
        init(self, "digest", payload_digest)
        init(self, "scope_set", _scope_set(claims.scopes))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Lease is immutable: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Lease is immutable: cannot delete {name!r}")

    @property
    def payload(self) -> bytes:
        """The signed payload: the canonical claims, the bytes whose digest is signed.

        A lease this runtime signed in a batch does not keep them (~0.5 KiB per live
        agent): they are encoded again from its claims and checked against the signed
        digest, so claims altered in memory never yield bytes that pass for signed ones.

        Raises:
            SignatureInvalid: the claims no longer encode to the signed payload.
        """
        payload = self._payload
        if payload is None:
            payload = claims_payload(self.claims)
            if digest(payload) != self.digest:
                raise _altered(self.claims, "its claims are not its signed payload")
        return payload

    @property
    def envelope(self) -> dict[str, Any]:
        """The signed lease as one JSON object (a fresh copy: editing it changes no lease).

        A DSSE envelope for a lease signed on its own; for a lease signed in a batch, the
        same ``payloadType`` and ``payload`` with ``batch`` (the batch's DSSE envelope) in
        place of ``signatures``. :meth:`~._authority.LeaseAuthority.verify` takes both.
        """
        if self._envelope is not None:
            value: dict[str, Any] = orjson.loads(self._envelope)
            return value
        assert self.batch is not None  # a lease is made with one form or the other
        return {
            "payloadType": LEASE_PAYLOAD_TYPE,
            "payload": b64e(self.payload),
            "batch": self.batch.envelope,
        }

    @property
    def id(self) -> str:
        """The lease id (stable across renewals)."""
        return self.claims.lid

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes this lease grants."""
        return self.scope_set

    @property
    def expires_at_us(self) -> int:
        """Wall-clock expiry in microseconds since the epoch."""
        return self.claims.exp

    def __repr__(self) -> str:
        c = self.claims
        return f"<Lease {c.lid} {c.sub} gen={c.gen} scopes={sorted(c.scopes)} exp={c.exp}>"


def check_intact(lease: Lease) -> None:
    """Raise :class:`SignatureInvalid` unless claims, payload and signature still agree."""
    c = lease.claims
    if lease.batch is not None and lease._envelope is None:
        carried = lease.digest in lease.batch.digests
    else:
        envelope = lease.envelope
        carried = isinstance(envelope, dict) and envelope.get("payload") == b64e(lease.payload)
    payload = lease._payload
    if payload is None:  # kept as its claims: what they encode to must be what was signed
        intact = digest(claims_payload(c)) == lease.digest
    else:
        intact = digest(payload) == lease.digest and claims_payload(c) == payload
    if not carried or not intact:
        raise _altered(c, "its claims, payload and signature disagree")


def _altered(c: LeaseClaims, how: str) -> SignatureInvalid:
    return SignatureInvalid(
        f"lease {c.lid} was altered in memory: {how}",
        run_id=c.run,
        lease_id=c.lid,
        check="lease.signature",
        task=c.sub,
    )


def check_narrowing(child: Lease, parent: Lease) -> None:
    """Raise :class:`SignatureInvalid` unless ``child`` only narrows ``parent``."""
    c, p = child.claims, parent.claims
    problems = []
    if c.parent != parent.digest:
        problems.append("parent digest does not bind the parent lease")
    if not child.scope_set <= parent.scope_set:
        problems.append(f"scopes {sorted(child.scope_set - parent.scope_set)} widen the parent")
    if c.exp > p.exp:
        problems.append(f"expiry {c.exp} is later than the parent's {p.exp}")
    if c.depth != p.depth + 1:
        problems.append(f"depth {c.depth} is not parent depth {p.depth} + 1")
    for name in ("run", "aud", "principal", "policy", "attestation"):
        if getattr(c, name) != getattr(p, name):
            problems.append(f"{name} differs from the parent's")
    if problems:
        raise SignatureInvalid(
            "child lease does not narrow its parent: " + "; ".join(problems),
            run_id=c.run,
            lease_id=c.lid,
            check="lease.narrowing",
            task=c.sub,
        )

"""Signed leases and the authority that issues, renews, revokes and verifies them.

A lease is a capability: claims canonicalized with RFC 8785 and signed with Ed25519 inside
a DSSE envelope (``application/vnd.tenure.lease.v1+json``). Every security-relevant claim
(run, parent, principal, subject, scopes, times, policy and attestation digests, epoch,
nonce) is inside the signed payload; nothing that decides authority lives outside it.

Invariants, each enforced by its own check:

- A child lease only narrows its parent: scopes a subset, expiry no later, same run,
  audience, policy and attestation, depth one more, the parent's digest bound in.
- No lease, root or renewed, expires after the run's hard deadline (its ``ttl``).
- Revoking a lease revokes every descendant (:meth:`LeaseAuthority.revoke` returns them).
- Verification order: signature, payload type, then claims parsing and audience.

Times are integers in microseconds since the Unix epoch (within 2**53, so RFC 8785 keeps
them exact). Locally, expiry is enforced against ``time.monotonic`` deadlines so that a
wall-clock jump can neither extend nor cut a live lease; wall times are for the evidence.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from ..._errors import LeaseExpired, PolicyDenied, SignatureInvalid
from ..._util import NoPublicConstructor, final
from ...crypto._canonical import b64e, canonical_fast, digest
from ...crypto._dsse import sign_envelope, verify_envelope
from ...crypto._keys import SigningKey
from ...evidence._format import LEASE_PAYLOAD_TYPE

__all__ = ["Lease", "LeaseAuthority", "LeaseClaims", "wall_us"]


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


@final
class Lease(metaclass=NoPublicConstructor):
    """A verified, signed lease: claims, the exact signed payload and its envelope.

    Only a :class:`LeaseAuthority` creates leases (issue, renew or verify); the lease id
    (``lid``) is also its revocation id, and ``digest`` (SHA-256 of the payload) is what a
    child lease binds as its parent.

    Immutable: every attribute is set once, at creation, and assigning or deleting one
    raises ``AttributeError`` (``ctx.lease`` is this object, so an agent assigning
    ``ctx.lease.scope_set`` used to widen its own authority). The claims are a frozen
    model of tuples; ``envelope`` hands out a copy. The runtime's scope checks read this
    object's claims-derived ``scope_set``, and a child lease is checked against the
    parent's signed claims before it is signed.
    """

    __slots__ = ("_envelope", "claims", "digest", "payload", "scope_set")

    claims: LeaseClaims
    payload: bytes
    digest: str
    scope_set: frozenset[str]
    _envelope: tuple[str, str, tuple[tuple[tuple[str, Any], ...], ...]]

    def __init__(self, claims: LeaseClaims, payload: bytes, envelope: dict[str, Any]) -> None:
        init = object.__setattr__
        init(self, "claims", claims)
        init(self, "payload", payload)
        init(self, "_envelope", _frozen_envelope(envelope))
        init(self, "digest", digest(payload))
        init(self, "scope_set", frozenset(claims.scopes))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Lease is immutable: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Lease is immutable: cannot delete {name!r}")

    @property
    def envelope(self) -> dict[str, Any]:
        """The signed DSSE envelope (a fresh copy: editing it changes no lease)."""
        payload_type, payload, signatures = self._envelope
        return {
            "payloadType": payload_type,
            "payload": payload,
            "signatures": [dict(sig) for sig in signatures],
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


class LeaseAuthority:
    """Issues, renews, revokes and verifies the leases of one runtime.

    ``audience`` names the runtime instance; a lease minted for another audience, by
    another key, or with any altered byte fails :meth:`verify` with
    :class:`SignatureInvalid`.
    """

    def __init__(self, key: SigningKey, audience: str) -> None:
        self._key = key
        self.audience = audience
        self._revoked: set[str] = set()
        # parent lid -> its live children's lids (a dict as an ordered set: O(1) removal)
        self._children: dict[str, dict[str, None]] = {}

    @property
    def key(self) -> SigningKey:
        """The signing key (swapped only through :meth:`rotate_key`)."""
        return self._key

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key leases are verified against."""
        return self._key.public_key

    def rotate_key(self, key: SigningKey) -> None:
        """Sign future leases with ``key`` (a reloaded key file)."""
        self._key = key

    def _sign(self, claims: LeaseClaims) -> Lease:
        payload = canonical_fast(_as_json(claims))
        envelope = sign_envelope(self._key, LEASE_PAYLOAD_TYPE, payload)
        return Lease._create(claims, payload, envelope)

    def issue_root(
        self,
        *,
        run_id: str,
        principal: str,
        subject: str,
        scopes: Iterable[str],
        expires_us: int,
        hard_deadline_us: int,
        policy: str,
        attestation: str,
        epoch: int,
        now_us: int | None = None,
    ) -> Lease:
        """The lease for a run's root agent, expiring no later than the run's deadline.

        ``now_us`` is the issue time on the caller's lease clock (default: the wall clock);
        a run passes its own clock so that every lease time of the run shares one base.
        """
        now = wall_us() if now_us is None else now_us
        claims = LeaseClaims(
            lid=secrets.token_hex(16),
            gen=0,
            run=run_id,
            parent=None,
            parent_lid=None,
            depth=0,
            iss=self._key.key_id,
            aud=self.audience,
            principal=principal,
            sub=subject,
            scopes=tuple(sorted(set(scopes))),
            iat=now,
            nbf=now,
            exp=min(expires_us, hard_deadline_us),
            nonce=secrets.token_hex(16),
            policy=policy,
            attestation=attestation,
            epoch=epoch,
        )
        return self._sign(claims)

    def issue_child(
        self,
        parent: Lease,
        *,
        subject: str,
        scopes: Iterable[str],
        expires_us: int,
        now_us: int | None = None,
    ) -> Lease:
        """A lease for a delegated task: only ever narrower than ``parent``."""
        if parent.claims.lid in self._revoked:
            raise PolicyDenied(
                "cannot delegate under a revoked lease",
                run_id=parent.claims.run,
                lease_id=parent.claims.lid,
                check="lease.revoked",
            )
        wanted = frozenset(scopes)
        # Narrowed against the scopes in the parent's signed payload: whatever happened to
        # the in-memory objects, no child is signed wider than what was signed for it.
        signed = frozenset(orjson.loads(parent.payload)["scopes"])
        extra = wanted - (signed & parent.scope_set)
        if extra:
            raise PolicyDenied(
                f"child lease for {subject} asks for scopes {sorted(extra)} that the parent "
                f"lease does not hold (parent has {sorted(signed)})",
                run_id=parent.claims.run,
                lease_id=parent.claims.lid,
                check="lease.narrowing",
                task=subject,
            )
        now = wall_us() if now_us is None else now_us
        p = parent.claims
        # Not re-validated: every field is the verified parent's, or made here (the hot path
        # of a fan-out); the signed payload is checked field by field when read back.
        claims = LeaseClaims.model_construct(
            v=1,
            lid=secrets.token_hex(16),
            gen=0,
            run=p.run,
            parent=parent.digest,
            parent_lid=p.lid,
            depth=p.depth + 1,
            iss=self._key.key_id,
            aud=self.audience,
            principal=p.principal,
            sub=subject,
            scopes=tuple(sorted(wanted)),
            iat=now,
            nbf=now,
            exp=min(expires_us, p.exp),
            nonce=secrets.token_hex(16),
            policy=p.policy,
            attestation=p.attestation,
            epoch=p.epoch,
        )
        self._children.setdefault(p.lid, {})[claims.lid] = None
        return self._sign(claims)

    def renew(
        self,
        lease: Lease,
        *,
        expires_us: int,
        hard_deadline_us: int,
        parent: Lease | None = None,
        policy: str | None = None,
        epoch: int | None = None,
        now_us: int | None = None,
    ) -> Lease:
        """A new generation of ``lease`` with a later expiry (never past the hard deadline).

        The current lease is checked first: its claims must be exactly the payload it was
        signed over and its envelope must carry that payload, so a lease altered in memory
        is never extended. (Its signature was verified when it was made, and the watchdog
        re-verifies every live lease's signature about once per lease lifetime; a renewal
        does not pay a second signature check.) ``now_us``: the current time on the same
        clock as ``expires_us`` and ``hard_deadline_us`` (default: the wall clock).
        """
        _check_intact(lease)
        c = lease.claims
        if c.lid in self._revoked:
            raise PolicyDenied(
                "a revoked lease is never renewed",
                run_id=c.run,
                lease_id=c.lid,
                check="lease.revoked",
                task=c.sub,
            )
        exp = min(expires_us, hard_deadline_us)
        if parent is not None:
            exp = min(exp, parent.claims.exp)
        if exp <= (wall_us() if now_us is None else now_us):
            raise LeaseExpired(
                "the run's ttl is exhausted: the lease cannot be renewed",
                run_id=c.run,
                lease_id=c.lid,
                check="lease.ttl",
                task=c.sub,
            )
        claims = c.model_copy(
            update={
                "gen": c.gen + 1,
                "exp": exp,
                "nonce": secrets.token_hex(16),
                "parent": parent.digest if parent is not None else c.parent,
                "policy": policy if policy is not None else c.policy,
                "epoch": epoch if epoch is not None else c.epoch,
            }
        )
        return self._sign(claims)

    def revoke(self, lease_id: str, *, descendants: Iterable[str] | None = None) -> list[str]:
        """Revoke ``lease_id`` and its descendants; returns every id newly revoked.

        ``descendants``: every live descendant, when the caller already knows them (a run
        revoking its root lease: all its live leases), marked at C speed instead of walked.
        """
        if descendants is not None:
            ids = [lease_id, *descendants]
            newly_set = set(ids) - self._revoked
            self._revoked |= newly_set
            return [lid for lid in ids if lid in newly_set]
        newly: list[str] = []
        stack = [lease_id]
        while stack:
            lid = stack.pop()
            if lid not in self._revoked:
                self._revoked.add(lid)
                newly.append(lid)
            stack.extend(self._children.get(lid, ()))
        return newly

    def is_revoked(self, lease_id: str) -> bool:
        """True if ``lease_id`` (or an ancestor, at revocation time) was revoked."""
        return lease_id in self._revoked

    def forget(self, lease: Lease) -> None:
        """Drop the bookkeeping of a lease whose step ended (its records are on disk)."""
        c = lease.claims
        self._children.pop(c.lid, None)
        self._revoked.discard(c.lid)
        if c.parent_lid is not None:
            siblings = self._children.get(c.parent_lid)
            if siblings is not None:
                siblings.pop(c.lid, None)

    def forget_run(self, lease_ids: Iterable[str]) -> None:
        """Drop bookkeeping for leases of a finished run (revocations are in its ledger)."""
        for lid in lease_ids:
            self._children.pop(lid, None)
            self._revoked.discard(lid)

    def verify(self, envelope: Any, *, parent: Lease | None = None) -> Lease:
        """Verify an envelope minted by this authority and return the lease.

        Raises :class:`SignatureInvalid` naming the failed check: signature, payload type,
        claims, issuer, audience, or (with ``parent``) the narrowing rules.
        """
        try:
            payload = verify_envelope(envelope, self._key.public_key, LEASE_PAYLOAD_TYPE)
        except ValueError as exc:
            raise SignatureInvalid(f"lease rejected: {exc}", check="lease.signature") from exc
        try:
            claims = LeaseClaims.model_validate(_decode_claims(payload))
        except (ValidationError, ValueError) as exc:
            raise SignatureInvalid(
                f"lease payload is not valid lease claims: {exc}", check="lease.claims"
            ) from exc
        if claims.iss != self._key.key_id:
            raise SignatureInvalid(
                f"lease issuer {claims.iss!r} is not this runtime's key {self._key.key_id!r}",
                run_id=claims.run,
                lease_id=claims.lid,
                check="lease.issuer",
            )
        if claims.aud != self.audience:
            raise SignatureInvalid(
                f"lease audience {claims.aud!r} is not this runtime ({self.audience!r})",
                run_id=claims.run,
                lease_id=claims.lid,
                check="lease.audience",
            )
        lease = Lease._create(claims, payload, envelope)
        if parent is not None:
            check_narrowing(lease, parent)
        return lease


_CLAIM_FIELDS = tuple(LeaseClaims.model_fields)


def _as_json(claims: LeaseClaims) -> dict[str, Any]:
    """The claims as the JSON object that is signed (``model_dump(mode="json")``, faster)."""
    out = {name: getattr(claims, name) for name in _CLAIM_FIELDS}
    out["scopes"] = list(claims.scopes)
    return out


def _check_intact(lease: Lease) -> None:
    """Raise :class:`SignatureInvalid` unless claims, payload and envelope still agree."""
    c = lease.claims
    envelope = lease.envelope
    if (
        not isinstance(envelope, dict)
        or envelope.get("payload") != b64e(lease.payload)
        or digest(lease.payload) != lease.digest
        or canonical_fast(_as_json(c)) != lease.payload
    ):
        raise SignatureInvalid(
            f"lease {c.lid} was altered in memory: its claims, payload and envelope disagree",
            run_id=c.run,
            lease_id=c.lid,
            check="lease.signature",
            task=c.sub,
        )


def _frozen_envelope(envelope: Any) -> tuple[str, str, tuple[tuple[tuple[str, Any], ...], ...]]:
    """An envelope as immutable tuples (rebuilt as a dict by :attr:`Lease.envelope`)."""
    signatures = tuple(tuple(sorted(sig.items())) for sig in envelope["signatures"])
    return envelope["payloadType"], envelope["payload"], signatures


def _decode_claims(payload: bytes) -> Any:
    claims = json.loads(payload)
    if isinstance(claims, dict) and isinstance(claims.get("scopes"), list):
        claims["scopes"] = tuple(claims["scopes"])
    return claims


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

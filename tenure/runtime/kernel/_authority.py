"""The lease authority of one runtime: drafts, signs, renews, revokes and verifies leases.

Invariants, each enforced by its own check:

- A child lease only narrows its parent: scopes a subset, expiry no later, same run,
  audience, policy and attestation, depth one more, the parent's digest bound in.
- No lease, root or renewed, expires after the run's hard deadline (its ``ttl``).
- Revoking a lease revokes every descendant (:meth:`LeaseAuthority.revoke` returns them).
- Verification order: signature (the lease's own, or its batch's and the digest's place in
  it), payload type, then claims parsing, issuer and audience.

Issuing is split in two so that many leases can share one signature: ``draft_*`` checks
and builds the claims, :meth:`LeaseAuthority.sign_batch` signs any number of drafts with
one signature (:class:`~._lease.LeaseBatch`); ``issue_*`` / :meth:`~LeaseAuthority.renew`
draft and sign one lease on its own (a DSSE envelope), for a lease that travels.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from ..._errors import LeaseExpired, PolicyDenied, SignatureInvalid
from ...crypto import SigningKey, b64d, digest, sign_envelope, verify_envelope
from ...evidence._batch import lease_batch_payload, open_lease_batch
from ...evidence._format import LEASE_BATCH_PAYLOAD_TYPE, LEASE_PAYLOAD_TYPE
from ._lease import (
    Lease,
    LeaseBatch,
    LeaseClaims,
    check_intact,
    check_narrowing,
    claims_payload,
    decode_claims,
    new_claims,
    wall_us,
)

__all__ = ["LeaseAuthority"]

_SIGNED_SCOPES_KEPT: Final = 1024  # parents whose signed scopes are remembered


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
        # parent digest -> the scopes in its signed payload (a fan-out drafts thousands of
        # children of one parent: its payload is parsed once, not once per child)
        self._signed_scopes: dict[str, frozenset[str]] = {}
        # batch -> (the envelope bytes, run, digests and key id its signature was verified
        # with): the watchdog re-checks a batch's leases every pass, its signature once.
        self._verified: weakref.WeakKeyDictionary[
            LeaseBatch, tuple[bytes, str, frozenset[str], str]
        ] = weakref.WeakKeyDictionary()

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
        self._verified.clear()  # verified under the old key: check again under this one

    # -- signing ----------------------------------------------------------------------------

    def sign_one(self, claims: LeaseClaims) -> Lease:
        """Sign ``claims`` on their own: a lease with its own DSSE envelope."""
        payload = claims_payload(claims)
        envelope = sign_envelope(self._key, LEASE_PAYLOAD_TYPE, payload)
        return Lease._create(claims, payload, envelope)

    def sign_batch(
        self, run_id: str, drafts: Sequence[LeaseClaims]
    ) -> tuple[list[Lease], list[bytes]]:
        """Sign ``drafts`` (claims of leases of run ``run_id``) with one signature.

        Returns the leases and the payloads signed (in the order of ``drafts``), for the
        batch's record: the very bytes whose digests the signature covers, not encoded a
        second time from the claims (the leases keep only the digests).
        """
        payloads = [claims_payload(c) for c in drafts]
        digests = [digest(p) for p in payloads]
        body = lease_batch_payload(run_id, digests)
        envelope = sign_envelope(self._key, LEASE_BATCH_PAYLOAD_TYPE, body)
        batch = LeaseBatch._create(run_id, body, envelope, frozenset(digests))
        # The payloads are not kept: a lease encodes them again from its claims when asked
        # (checked against its digest); the batch record takes them from ``lease.payload``.
        leases = [
            Lease._create(c, None, batch=batch, payload_digest=d)
            for c, d in zip(drafts, digests, strict=True)
        ]
        return leases, payloads

    # -- drafting -----------------------------------------------------------------------------

    def draft_root(
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
    ) -> LeaseClaims:
        """The claims of a run's root lease, expiring no later than the run's deadline.

        ``now_us`` is the issue time on the caller's lease clock (default: the wall clock);
        a run passes its own clock so that every lease time of the run shares one base.
        """
        now = wall_us() if now_us is None else now_us
        return LeaseClaims(
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

    def issue_root(self, **kwargs: Any) -> Lease:
        """:meth:`draft_root`, signed on its own (a DSSE envelope)."""
        return self.sign_one(self.draft_root(**kwargs))

    def _signed_scopes_of(self, parent: Lease) -> frozenset[str]:
        signed = self._signed_scopes.get(parent.digest)
        if signed is None:
            if len(self._signed_scopes) >= _SIGNED_SCOPES_KEPT:
                self._signed_scopes.clear()
            signed = frozenset(orjson.loads(parent.payload)["scopes"])
            self._signed_scopes[parent.digest] = signed
        return signed

    def draft_child(
        self,
        parent: Lease,
        *,
        subject: str,
        scopes: Iterable[str],
        expires_us: int,
        now_us: int | None = None,
    ) -> LeaseClaims:
        """The claims of a lease for a delegated task: only ever narrower than ``parent``."""
        p = parent.claims
        if p.lid in self._revoked:
            raise PolicyDenied(
                "cannot delegate under a revoked lease",
                run_id=p.run,
                lease_id=p.lid,
                check="lease.revoked",
            )
        wanted = frozenset(scopes)
        # Narrowed against the scopes in the parent's signed payload: whatever happened to
        # the in-memory objects, no child is signed wider than what was signed for it.
        signed = self._signed_scopes_of(parent)
        extra = wanted - (signed & parent.scope_set)
        if extra:
            raise PolicyDenied(
                f"child lease for {subject} asks for scopes {sorted(extra)} that the parent "
                f"lease does not hold (parent has {sorted(signed)})",
                run_id=p.run,
                lease_id=p.lid,
                check="lease.narrowing",
                task=subject,
            )
        now = wall_us() if now_us is None else now_us
        lid = secrets.token_hex(16)
        # Not re-validated: every field is the verified parent's, or made here (the hot path
        # of a fan-out); the signed payload is checked field by field when read back.
        claims = new_claims(
            {
                "v": 1,
                "lid": lid,
                "gen": 0,
                "run": p.run,
                "parent": parent.digest,
                "parent_lid": p.lid,
                "depth": p.depth + 1,
                "iss": self._key.key_id,
                "aud": self.audience,
                "principal": p.principal,
                "sub": subject,
                "scopes": tuple(sorted(wanted)),
                "iat": now,
                "nbf": now,
                "exp": min(expires_us, p.exp),
                "nonce": secrets.token_hex(16),
                "policy": p.policy,
                "attestation": p.attestation,
                "epoch": p.epoch,
            }
        )
        self._children.setdefault(p.lid, {})[lid] = None
        return claims

    def issue_child(self, parent: Lease, **kwargs: Any) -> Lease:
        """:meth:`draft_child`, signed on its own (a DSSE envelope)."""
        return self.sign_one(self.draft_child(parent, **kwargs))

    def draft_renewal(
        self,
        lease: Lease,
        *,
        expires_us: int,
        hard_deadline_us: int,
        parent: Lease | None = None,
        policy: str | None = None,
        epoch: int | None = None,
        now_us: int | None = None,
    ) -> LeaseClaims:
        """The claims of a new generation of ``lease`` (never past the hard deadline).

        The current lease is checked first: its claims must be exactly the payload it was
        signed over and its signature must carry that payload, so a lease altered in memory
        is never extended. (Its signature was verified when it was made, and the watchdog
        re-verifies every live lease about once per two lease lifetimes; a renewal does not
        pay a second signature check.) ``now_us``: the current time on the same clock as
        ``expires_us`` and ``hard_deadline_us`` (default: the wall clock).
        """
        check_intact(lease)
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
        values = dict(c.__dict__)
        values.update(
            gen=c.gen + 1,
            exp=exp,
            nonce=secrets.token_hex(16),
            parent=parent.digest if parent is not None else c.parent,
            policy=policy if policy is not None else c.policy,
            epoch=epoch if epoch is not None else c.epoch,
        )
        return new_claims(values)

    def renew(self, lease: Lease, **kwargs: Any) -> Lease:
        """:meth:`draft_renewal`, signed on its own (a DSSE envelope)."""
        return self.sign_one(self.draft_renewal(lease, **kwargs))

    # -- revocation ---------------------------------------------------------------------------

    def revoke(self, lease_id: str, *, subtree: bool = True) -> list[str]:
        """Revoke ``lease_id`` and its descendants; returns every id newly revoked.

        ``subtree=False``: the caller stops everything under the lease by other means (a
        run revoking its root lease stops the whole run); only the lease itself is marked.
        """
        if not subtree:
            if lease_id in self._revoked:
                return []
            self._revoked.add(lease_id)
            return [lease_id]
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
        self._signed_scopes.pop(lease.digest, None)
        if c.parent_lid is not None:
            siblings = self._children.get(c.parent_lid)
            if siblings is not None:
                siblings.pop(c.lid, None)

    def forget_run(self, lease_ids: Iterable[str]) -> None:
        """Drop bookkeeping for leases of a finished run (revocations are in its ledger)."""
        for lid in lease_ids:
            self._children.pop(lid, None)
            self._revoked.discard(lid)

    # -- verification -------------------------------------------------------------------------

    def verify(self, envelope: Any, *, parent: Lease | None = None) -> Lease:
        """Verify a signed lease minted by this authority and return the lease.

        ``envelope`` is a lease's DSSE envelope, or the batch form (``payloadType``,
        ``payload`` and ``batch``: the signing batch's envelope, see :attr:`Lease.envelope`).
        Raises :class:`SignatureInvalid` naming the failed check: signature, payload type,
        claims, issuer, audience, or (with ``parent``) the narrowing rules.
        """
        batch: LeaseBatch | None = None
        try:
            if isinstance(envelope, dict) and "batch" in envelope:
                payload, batch = self._open_batched(envelope)
            else:
                payload = verify_envelope(envelope, self._key.public_key, LEASE_PAYLOAD_TYPE)
        except ValueError as exc:
            raise SignatureInvalid(f"lease rejected: {exc}", check="lease.signature") from exc
        claims = self._claims_of(payload, batch)
        if batch is not None:
            lease = Lease._create(claims, payload, batch=batch)
        else:
            lease = Lease._create(claims, payload, envelope)
        if parent is not None:
            check_narrowing(lease, parent)
        return lease

    def verify_lease(
        self, lease: Lease, *, parent: Lease | None = None, batches: set[int] | None = None
    ) -> None:
        """Re-verify a live lease (the watchdog's check): signature, claims, narrowing.

        ``batches``: ids of :class:`LeaseBatch` objects whose signature this caller already
        verified in this pass (each is checked once; the leases it signs by their digest).
        """
        batch = lease.batch
        if batch is None or lease._envelope is not None:
            self.verify(lease.envelope, parent=parent)
            return
        if batches is None or id(batch) not in batches:
            self._check_batch(batch)
            if batches is not None:
                batches.add(id(batch))
        payload = lease.payload
        if digest(payload) != lease.digest or lease.digest not in batch.digests:
            raise SignatureInvalid(
                "lease rejected: its payload is not one its batch signed",
                check="lease.signature",
            )
        claims = self._claims_of(payload, batch)
        if claims != lease.claims:
            raise SignatureInvalid(
                f"lease {claims.lid} was altered in memory: its claims differ from the signed",
                run_id=claims.run,
                lease_id=claims.lid,
                check="lease.signature",
            )
        if parent is not None:
            check_narrowing(lease, parent)

    def _check_batch(self, batch: LeaseBatch) -> None:
        """Raise :class:`SignatureInvalid` unless ``batch`` is what its signature signed.

        The signature is verified once per batch object and envelope: the same immutable
        envelope bytes verify the same way under the same key, so later checks compare
        identities (a swapped envelope or digest set is verified again, in full).
        """
        raw, key_id = batch._envelope, self._key.key_id
        seen = self._verified.get(batch)
        if seen is not None and seen[0] is raw and seen[3] == key_id:
            run, signed = seen[1], seen[2]
        else:
            try:
                run, digests = open_lease_batch(batch.envelope, self._key.public_key, batch.run)
            except ValueError as exc:
                raise SignatureInvalid(f"lease rejected: {exc}", check="lease.signature") from exc
            signed = frozenset(digests)
        if run != batch.run or (signed is not batch.digests and signed != batch.digests):
            raise SignatureInvalid(
                "lease rejected: the batch's digests were altered in memory",
                check="lease.signature",
            )
        self._verified[batch] = (raw, run, batch.digests, key_id)

    def _open_batched(self, envelope: dict[str, Any]) -> tuple[bytes, LeaseBatch]:
        """The payload of a lease in batch form, and its batch (``ValueError`` if unsigned)."""
        if envelope.get("payloadType") != LEASE_PAYLOAD_TYPE:
            raise ValueError(f"envelope.payloadType: expected {LEASE_PAYLOAD_TYPE!r}")
        try:
            payload = b64d(envelope["payload"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError("envelope.payload: not valid base64") from exc
        signed = envelope["batch"]
        run, digests = open_lease_batch(signed, self._key.public_key, None)
        if digest(payload) not in digests:
            raise ValueError("the lease's payload is not one its batch signed")
        body = lease_batch_payload(run, digests)
        return payload, LeaseBatch._create(run, body, signed, frozenset(digests))

    def _claims_of(self, payload: bytes, batch: LeaseBatch | None) -> LeaseClaims:
        try:
            claims = LeaseClaims.model_validate(decode_claims(payload))
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
        if batch is not None and claims.run != batch.run:
            raise SignatureInvalid(
                f"lease {claims.lid} is for run {claims.run!r}, its batch for {batch.run!r}",
                run_id=claims.run,
                lease_id=claims.lid,
                check="lease.signature",
            )
        return claims

"""The verifier's lease rules: every lease a step may run under was signed and is sound.

Each ``lease.issued`` / ``lease.renewed`` envelope verifies (DSSE
:data:`~._format.LEASE_PAYLOAD_TYPE`) and its claims match the record (lease id, run, exp);
each ``lease.batch`` envelope verifies (:mod:`._batch`) and every payload in it is one the
batch signed (its digest listed, in order). Every lease names this run, expires by the
run's deadline, holds a list of string scopes within its parent's, and is issued once; a
renewal renews a lease issued earlier; a revocation marks the lease and its cascade.
:class:`LeaseRules` holds the leases seen so far for :class:`~._semantics.Semantics`'
step checks.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import digest, verify_envelope
from ._batch import decode_payloads, open_lease_batch
from ._fail import Fail
from ._format import (
    LEASE_BATCH,
    LEASE_BATCH_PURPOSES,
    LEASE_ISSUED,
    LEASE_PAYLOAD_TYPE,
    LEASE_RENEWED,
)
from ._reader import loads_bounded

__all__ = ["LeaseRules", "LeaseState"]


class LeaseState:
    """What the verifier knows of one lease."""

    __slots__ = ("exp", "parent", "revoked_at", "scopes", "started", "subject")

    def __init__(
        self, exp: int, parent: str | None, scopes: frozenset[str], subject: object = None
    ) -> None:
        self.exp = exp
        self.parent = parent
        self.scopes = scopes
        self.subject = subject  # the signed ``sub`` ("agent:<name>"), when the claims have one
        self.revoked_at: int | None = None
        self.started = False  # an agent step ran under it (one agent step per lease)


class LeaseRules:
    """The lease records' checks, and the leases issued so far (``leases``)."""

    key: Ed25519PublicKey
    run_id: str
    deadline: int | None
    leases: dict[str, LeaseState]

    @staticmethod
    def _str(rec: dict[str, Any], name: str, n: int) -> str:
        v = rec.get(name)
        if type(v) is not str:
            raise Fail("record.field", n, rec["kind"], f"field {name!r} is missing or not a string")
        return v

    def _claims(self, rec: dict[str, Any], n: int) -> dict[str, Any]:
        """The claims of a single-lease record, its envelope verified and matching it."""
        kind = rec["kind"]
        try:
            payload = verify_envelope(rec.get("envelope"), self.key, LEASE_PAYLOAD_TYPE)
            claims = loads_bounded(payload)
        except ValueError as exc:
            raise Fail("lease.envelope", n, kind, f"lease envelope: {exc}") from exc
        if not isinstance(claims, dict):
            raise Fail("lease.envelope", n, kind, "lease envelope payload is not a JSON object")
        lid = self._str(rec, "lease", n)
        if claims.get("lid") != lid:
            raise Fail(
                "lease.envelope",
                n,
                kind,
                f"lease envelope is for {claims.get('lid')!r}, record names {lid!r}",
            )
        self._check_claims(claims, n, kind)
        if claims["exp"] != rec.get("exp"):
            raise Fail(
                "lease.envelope",
                n,
                kind,
                f"lease {lid}: signed exp {claims['exp']!r} != recorded exp {rec.get('exp')!r}",
            )
        return claims

    def _check_claims(self, claims: dict[str, Any], n: int, kind: str) -> None:
        """The claims every lease must have: a lease id, this run, an exp within the ttl."""
        lid = claims.get("lid")
        if type(lid) is not str or not lid:
            raise Fail("lease.envelope", n, kind, f"lease id {lid!r} is not a string")
        if claims.get("run") != self.run_id:
            raise Fail(
                "lease.envelope",
                n,
                kind,
                f"lease {lid} is for run {claims.get('run')!r}, not {self.run_id!r}",
            )
        exp = claims.get("exp")
        if type(exp) is not int:
            raise Fail("lease.envelope", n, kind, f"lease {lid}: signed exp {exp!r} is not an int")
        if self.deadline is not None and exp > self.deadline:
            raise Fail(
                "lease.deadline",
                n,
                kind,
                f"lease {lid} expires at {exp}, after the run deadline {self.deadline}",
            )

    def _lease_issued(self, rec: dict[str, Any], n: int) -> None:
        claims = self._claims(rec, n)
        parent = self._issue(claims, n, LEASE_ISSUED)
        if (parent or "") != rec.get("parent", parent or ""):
            raise Fail(
                "lease.parent",
                n,
                LEASE_ISSUED,
                f"lease {claims['lid']}: record parent differs from the signed one",
            )

    def _issue(self, claims: dict[str, Any], n: int, kind: str) -> str | None:
        """Enter a newly issued lease (claims checked); returns its parent's id."""
        lid: str = claims["lid"]
        if lid in self.leases:
            raise Fail("lease.duplicate", n, kind, f"lease {lid} was already issued")
        parent = claims["parent_lid"] if "parent_lid" in claims else claims.get("parent")
        if parent is not None and type(parent) is not str:
            raise Fail("lease.parent", n, kind, f"lease {lid}: parent {parent!r} is not a lease id")
        scopes_v = claims.get("scopes")
        if not isinstance(scopes_v, list) or not all(type(s) is str for s in scopes_v):
            raise Fail("lease.envelope", n, kind, f"lease {lid}: scopes must be a list of strings")
        scopes = frozenset(scopes_v)
        if parent:
            p = self.leases.get(parent)
            if p is None:
                raise Fail(
                    "lease.parent", n, kind, f"lease {lid}: parent lease {parent} was never issued"
                )
            if not scopes <= p.scopes:
                raise Fail(
                    "lease.widens",
                    n,
                    kind,
                    f"lease {lid} widens its parent {parent}: {sorted(scopes - p.scopes)}",
                )
        self.leases[lid] = LeaseState(claims["exp"], parent or None, scopes, claims.get("sub"))
        return parent

    def _lease_renewed(self, rec: dict[str, Any], n: int) -> None:
        self._renew(self._claims(rec, n), n, LEASE_RENEWED)

    def _renew(self, claims: dict[str, Any], n: int, kind: str) -> None:
        lease = self.leases.get(claims["lid"])
        if lease is None:
            raise Fail("lease.parent", n, kind, f"lease {claims['lid']} was never issued")
        lease.exp = claims["exp"]

    def _lease_batch(self, rec: dict[str, Any], n: int) -> None:
        """One signature over several leases: each payload must be one the batch signed."""
        purpose = rec.get("purpose")
        if purpose not in LEASE_BATCH_PURPOSES:
            raise Fail(
                "lease.batch",
                n,
                LEASE_BATCH,
                f"purpose {purpose!r} is not one of {sorted(LEASE_BATCH_PURPOSES)}",
            )
        try:
            _, signed = open_lease_batch(rec.get("envelope"), self.key, self.run_id)
            payloads = decode_payloads(rec.get("leases"))
        except ValueError as exc:
            raise Fail("lease.batch", n, LEASE_BATCH, str(exc)) from exc
        if len(payloads) != len(signed):
            raise Fail(
                "lease.unsigned",
                n,
                LEASE_BATCH,
                f"the record holds {len(payloads)} lease payloads, the batch signs {len(signed)}",
            )
        for k, (payload, want) in enumerate(zip(payloads, signed, strict=True)):
            if digest(payload) != want:
                raise Fail(
                    "lease.unsigned",
                    n,
                    LEASE_BATCH,
                    f"lease payload {k} is not the lease the batch signed at that position "
                    f"(its digest is not {want})",
                )
            try:
                claims = loads_bounded(payload)
            except ValueError as exc:
                raise Fail("lease.envelope", n, LEASE_BATCH, f"lease {k}: {exc}") from exc
            if not isinstance(claims, dict):
                raise Fail("lease.envelope", n, LEASE_BATCH, f"lease {k} is not a JSON object")
            self._check_claims(claims, n, LEASE_BATCH)
            if purpose == "issued":
                self._issue(claims, n, LEASE_BATCH)
            else:
                self._renew(claims, n, LEASE_BATCH)

    def _lease_revoked(self, rec: dict[str, Any], n: int) -> None:
        ids = [self._str(rec, "lease", n), *rec.get("cascade", ())]
        for lid in ids:
            lease = self.leases.get(lid)
            if lease is not None and lease.revoked_at is None:
                lease.revoked_at = n

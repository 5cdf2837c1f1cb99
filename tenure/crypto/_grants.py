"""Approval grants: what an approver signs, and how anyone checks it.

A step held for approval is described by its *action digest*: SHA-256 over the canonical
form of everything the approver is asked about (request id, run, step, principal, action,
target, the digest of the canonical arguments, the rule and the policy digest). An approver
answers with a DSSE envelope (:data:`GRANT_PAYLOAD_TYPE`) signed by their own Ed25519 key
over ``{"v": 1, "request", "action", "decision", "reason", "at"}``. The runtime releases
the step only for a grant whose signature verifies under a key the policy declares for the
rule, whose request and action digest are the held step's, and whose key is not the
runtime's own; ``tenure verify`` checks the same from the evidence alone.

A request shown outside the runtime (the evidence folder's ``.approvals``) also carries the
arguments' canonical encoding (:func:`args_encoding`): whoever answers can check that what
they are shown is what the args digest, and so the action digest they sign, covers
(:func:`args_digest_of`), instead of trusting a rendering anyone who can write the file
could have changed.

Approver public keys are written in policies as ``"ed25519:<base64 of the 32 raw bytes>"``
(``tenure keys show`` prints that form).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._util import final
from ._canonical import canonical, digest
from ._dsse import sign_envelope, verify_envelope
from ._keys import SigningKey, key_id_of
from ._values import DOMAIN, encode

__all__ = [
    "GRANT_PAYLOAD_TYPE",
    "KEY_PREFIX",
    "Grant",
    "action_digest",
    "args_digest_of",
    "args_encoding",
    "key_text",
    "open_grant",
    "parse_key_text",
    "sign_grant",
]

GRANT_PAYLOAD_TYPE: Final = "application/vnd.tenure.approval-grant.v1+json"
KEY_PREFIX: Final = "ed25519:"
_DECISIONS: Final = ("granted", "denied")
_MAX_REASON: Final = 500


def key_text(public_key: Ed25519PublicKey) -> str:
    """The policy form of a public key: ``ed25519:<base64 raw>``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_key_text(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<base64 raw>``; ``ValueError`` naming what is wrong."""
    if not text.startswith(KEY_PREFIX):
        raise ValueError(
            f"expected an Ed25519 public key as {KEY_PREFIX}<base64>, got {text!r:.60}"
        )
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the key {text!r:.60} is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)} in {text!r:.60}")
    return Ed25519PublicKey.from_public_bytes(raw)


def action_digest(
    *,
    request: str,
    run: str,
    step: str,
    principal: str,
    action: str,
    target: str,
    args: str,
    rule: str,
    policy: str,
) -> str:
    """The digest an approver signs: exactly which action, on which arguments, under what."""
    return digest(
        canonical(
            {
                "v": 1,
                "request": request,
                "run": run,
                "step": step,
                "principal": principal,
                "action": action,
                "target": target,
                "args": args,
                "rule": rule,
                "policy": policy,
            }
        )
    )


def args_encoding(value: Any) -> str:
    """Base64 of the canonical encoding of a step's arguments (``Snapshot.value()``): the
    bytes its args digest is taken over."""
    return base64.b64encode(encode(value)).decode("ascii")


def args_digest_of(encoded: str) -> str:
    """The args digest of an :func:`args_encoding` (``ValueError`` if it is not base64)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the arguments' encoding is not valid base64") from None
    return "sha256:" + hashlib.sha256(DOMAIN + raw).hexdigest()


@final
@dataclass(frozen=True, slots=True)
class Grant:
    """An opened, verified grant (or denial)."""

    request: str
    action: str
    decision: Literal["granted", "denied"]
    reason: str
    at_us: int
    key_id: str
    envelope: Mapping[str, Any]


def sign_grant(
    key: SigningKey,
    *,
    request: str,
    action: str,
    decision: Literal["granted", "denied"],
    reason: str = "",
) -> dict[str, Any]:
    """An approver's signed answer to one request (a DSSE envelope)."""
    if decision not in _DECISIONS:
        raise ValueError(f"decision must be 'granted' or 'denied', got {decision!r}")
    statement = {
        "v": 1,
        "request": request,
        "action": action,
        "decision": decision,
        "reason": reason[:_MAX_REASON],
        "at": time.time_ns() // 1000,
    }
    return sign_envelope(key, GRANT_PAYLOAD_TYPE, canonical(statement))


def open_grant(envelope: object, keys: Mapping[str, Ed25519PublicKey]) -> Grant:
    """Verify ``envelope`` under one of ``keys`` (key id -> public key) and parse it.

    ``ValueError`` names what failed: shape, unknown signer, signature, statement fields.
    """
    if not isinstance(envelope, dict):
        raise ValueError("a grant is a DSSE envelope (a JSON object)")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise ValueError("the grant carries no signature")
    # Tried under each accepted key (a handful): the envelope's keyid is only a hint.
    payload: bytes | None = None
    key_id = ""
    for key_id, public in keys.items():
        try:
            payload = verify_envelope(envelope, public, GRANT_PAYLOAD_TYPE)
        except ValueError:
            continue
        if key_id_of(public) != key_id:
            raise ValueError(f"key id {key_id} does not name the key it is listed with")
        break
    if payload is None:
        raise ValueError(
            "no signature on the grant verifies under an approver key this request accepts"
        )
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the grant's statement is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != 1:
        raise ValueError("the grant's statement is not a version 1 approval statement")
    request, action, decision = body.get("request"), body.get("action"), body.get("decision")
    reason, at = body.get("reason", ""), body.get("at")
    if not (isinstance(request, str) and isinstance(action, str) and isinstance(reason, str)):
        raise ValueError("the grant's statement lacks request, action or reason strings")
    if decision not in _DECISIONS or type(at) is not int:
        raise ValueError(f"the grant's decision {decision!r} or time {at!r} is malformed")
    return Grant(request, action, decision, reason, at, key_id, envelope)

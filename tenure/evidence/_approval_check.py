"""The verifier's approval checks: each answer signed by a key the request accepted.

An ``approval.requested`` record names the request's action digest and the approver keys
the policy declared for its rule (``approver_keys``, ``"ed25519:<base64>"``). An
``approval.granted`` / ``approval.denied`` record with ``approver_key`` must carry an
envelope that verifies (:data:`~tenure.crypto._grants.GRANT_PAYLOAD_TYPE`) under exactly
that key, which must be one the request accepted and never the runtime's own, over the
record's request id and the request's action digest, with the record's decision.

Older ledgers (0.1.0) have no ``approver_key``: their answers were signed by the runtime's
key, and are checked that way (as are timeouts, which the runtime itself declares).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import key_id_of, open_grant, parse_key_text, verify_envelope
from ._format import APPROVAL_GRANTED, APPROVAL_PAYLOAD_TYPE

__all__ = ["ApprovalCheck"]


class ApprovalCheck:
    """Requests seen so far in one ledger, and the check of each answer."""

    def __init__(self, runtime_key: Ed25519PublicKey) -> None:
        self._runtime_key = runtime_key
        self._runtime_key_id = key_id_of(runtime_key)
        # request id -> (action digest, accepted key id -> public key)
        self._requests: dict[str, tuple[str, dict[str, Ed25519PublicKey]]] = {}

    def requested(self, rec: dict[str, Any]) -> str | None:
        """Note an ``approval.requested`` record; a problem text if it is malformed."""
        request, action = rec.get("request"), rec.get("action_digest")
        if action is None:
            return None  # an older request: its answers are the runtime's statements
        keys_text = rec.get("approver_keys")
        if not isinstance(request, str) or not isinstance(action, str):
            return "request or action_digest is not a string"
        if not isinstance(keys_text, list):
            return "approver_keys is not a list"
        keys: dict[str, Ed25519PublicKey] = {}
        for text in keys_text:
            try:
                public = parse_key_text(text) if isinstance(text, str) else None
            except ValueError as exc:
                return f"approver key: {exc}"
            if public is None:
                return "an approver key is not a string"
            keys[key_id_of(public)] = public
        self._requests[request] = (action, keys)
        return None

    def answered(self, rec: dict[str, Any]) -> str | None:
        """Check an ``approval.granted``/``approval.denied`` record; a problem text or None."""
        key_id = rec.get("approver_key")
        if key_id is None:
            try:
                verify_envelope(rec.get("envelope"), self._runtime_key, APPROVAL_PAYLOAD_TYPE)
            except ValueError as exc:
                return f"approval envelope: {exc}"
            if rec.get("kind") == APPROVAL_GRANTED and rec.get("request") in self._requests:
                return "a request that names its approvers was granted without an approver key"
            return None
        if key_id == self._runtime_key_id:
            return "the runtime's own key answered an approval (it never may)"
        request = rec.get("request")
        held = self._requests.get(request) if isinstance(request, str) else None
        if held is None:
            return f"answers request {request!r}, which no earlier approval.requested names"
        action, keys = held
        public = keys.get(key_id) if isinstance(key_id, str) else None
        if public is None:
            return f"approver key {key_id!r} is not one the request accepted"
        try:
            grant = open_grant(rec.get("envelope"), {key_id: public})
        except ValueError as exc:
            return f"approval grant: {exc}"
        expected = "granted" if rec.get("kind") == APPROVAL_GRANTED else "denied"
        if (grant.request, grant.action, grant.decision) != (request, action, expected):
            return (
                f"the grant signs {grant.decision} of {grant.request} / {grant.action[:19]}, "
                f"not this record's {expected} of {request} / {action[:19]}"
            )
        return None

"""Key certificates: an operator's signed statement that a key belongs to a named process.

A run that spans several processes is signed by several keys (one per runtime or worker).
An auditor should need one key: the operator's. ``tenure keys certify WORKER.pub --name NAME
--by OPERATOR.key`` writes a certificate — a DSSE envelope (payload type
:data:`CERT_PAYLOAD_TYPE`) over ``{"v": 1, "name", "key", "pubkey", "issued_at_us"}``
(``key`` the key id, ``pubkey`` the raw Ed25519 public key in base64) signed by the operator
key. A worker declares it (``tenure worker --cert``, or ``tenure.cert`` beside its key) and
the export ships it with each segment.

Invariant: :func:`check_certificate` returns the certified key only when the envelope
verifies under the given operator key and its payload is well formed; anything else raises
``ValueError`` naming what failed.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import SigningKey, canonical, key_id_of, sign_envelope, verify_envelope
from ._reader import loads_bounded

__all__ = ["CERT_NAME", "CERT_PAYLOAD_TYPE", "certify", "check_certificate"]

CERT_PAYLOAD_TYPE: Final = "application/vnd.tenure.keycert.v1+json"
#: the certificate file beside a key (``tenure.key`` / ``tenure.pub`` / ``tenure.cert``)
CERT_NAME: Final = "tenure.cert"


def certify(operator: SigningKey, subject: Ed25519PublicKey, name: str) -> dict[str, Any]:
    """The operator's certificate (a DSSE envelope) that ``subject`` is ``name``'s key."""
    if not name or not name.isprintable():
        raise ValueError(f"a certificate names a process: expected printable text, got {name!r}")
    raw = subject.public_bytes_raw()
    statement = {
        "v": 1,
        "name": name,
        "key": key_id_of(subject),
        "pubkey": base64.b64encode(raw).decode("ascii"),
        "issued_at_us": time.time_ns() // 1000,
    }
    return dict(sign_envelope(operator, CERT_PAYLOAD_TYPE, canonical(statement)))


def check_certificate(envelope: Any, operator: Ed25519PublicKey) -> tuple[str, bytes]:
    """``(name, raw public key)`` a certificate vouches for under ``operator``."""
    payload = verify_envelope(envelope, operator, CERT_PAYLOAD_TYPE)
    statement = loads_bounded(payload)
    if not isinstance(statement, dict) or statement.get("v") != 1:
        raise ValueError("the certificate's statement is not a version 1 object")
    name, pub = statement.get("name"), statement.get("pubkey")
    if not isinstance(name, str) or not isinstance(pub, str):
        raise ValueError("the certificate's statement lacks its 'name' or 'pubkey'")
    try:
        raw = base64.b64decode(pub, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the certificate's 'pubkey' is not base64") from exc
    if len(raw) != 32:
        raise ValueError(f"the certificate's 'pubkey' has {len(raw)} bytes, not 32")
    return name, raw

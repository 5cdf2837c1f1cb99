"""DSSE envelopes (secure-systems-lab/dsse v1).

``SIG = Ed25519(PAE(payloadType, payload))`` with
``PAE(t, b) = "DSSEv1" SP LEN(t) SP t SP LEN(b) SP b``. The ``keyid`` is the one standard
tooling computes for the key (securesystemslib's default, :func:`~._keys.dsse_key_id`), so
in-toto and sigstore-style verifiers match it to a key imported the standard way. Here it is
only a hint: the verifier tries the trusted key it was given and never selects keys by it
(envelopes written by earlier versions carried Tenure's short key id and still verify).
Order of checks as the spec asks: signature first, then payload type, then parsing (left
to the caller).
"""

from __future__ import annotations

import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._canonical import b64d, b64e
from ._keys import SigningKey

__all__ = ["Envelope", "pae", "sign_envelope", "verify_envelope"]

Envelope = dict[str, Any]


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE pre-authentication encoding of ``payload`` under ``payload_type``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_envelope(key: SigningKey, payload_type: str, payload: bytes) -> Envelope:
    """A DSSE envelope over ``payload`` with one Ed25519 signature by ``key``."""
    sig = key.sign(pae(payload_type, payload))
    return {
        "payload": b64e(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": key.dsse_key_id, "sig": b64e(sig)}],
    }


def verify_envelope(envelope: Any, public_key: Ed25519PublicKey, payload_type: str) -> bytes:
    """Return the payload bytes if one signature verifies under ``public_key``.

    Raises ``ValueError`` naming the field that is malformed, or the check that failed.
    """
    if not isinstance(envelope, dict):
        raise ValueError("envelope: expected a JSON object")
    try:
        payload = b64d(envelope["payload"])
        ptype = envelope["payloadType"]
        sigs = envelope["signatures"]
    except KeyError as exc:
        raise ValueError(f"envelope: missing field {exc.args[0]!r}") from exc
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ValueError("envelope.payload: not valid base64") from exc
    if not isinstance(ptype, str) or not isinstance(sigs, list) or not sigs:
        raise ValueError("envelope: payloadType must be a string and signatures non-empty")
    message = pae(ptype, payload)
    for entry in sigs:
        try:
            public_key.verify(b64d(entry["sig"]), message)
        except (InvalidSignature, KeyError, TypeError, binascii.Error, ValueError):
            continue
        break
    else:
        raise ValueError("envelope: no signature verifies under the trusted key")
    if ptype != payload_type:
        raise ValueError(f"envelope.payloadType: expected {payload_type!r}, got {ptype!r}")
    return payload

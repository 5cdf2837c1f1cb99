"""The signed form of a run manifest: an in-toto Statement in a DSSE envelope.

The Statement has one subject (``tenure-run-environment``) whose SHA-256 is the digest of the
manifest, and a predicate holding the manifest with the attester key id, issue time, a nonce
and the run id. :func:`sign_statement` builds it, :func:`write_envelope` stores it next to the
ledger, :func:`verify_attestation` checks it.

Invariants:

- The subject digest of a statement is the SHA-256 of the RFC 8785 bytes of exactly the
  manifest inside its predicate; the payload is the RFC 8785 bytes of the statement.
  :func:`verify_attestation` checks both and refuses anything else.
- The attestation file is replaced atomically (write a temporary file, rename): a reader sees
  the old envelope or the new one, never a partial file.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import (
    Envelope,
    SigningKey,
    canonical,
    canonical_fast,
    sha256_hex,
    sign_envelope,
    verify_envelope,
)
from ._format import ATTESTATION_NAME, INTOTO_PAYLOAD_TYPE, INTOTO_STATEMENT_TYPE

__all__ = [
    "ATTESTATION_FILE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "SUBJECT_NAME",
    "sign_statement",
    "verify_attestation",
    "write_envelope",
]

STATEMENT_TYPE = INTOTO_STATEMENT_TYPE
PREDICATE_TYPE = "https://tenure.dev/attestation/run-environment/v1"
PAYLOAD_TYPE = INTOTO_PAYLOAD_TYPE
SUBJECT_NAME = "tenure-run-environment"
ATTESTATION_FILE = ATTESTATION_NAME
_PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS  # the envelope is ASCII (base64, ids)


def sign_statement(
    key: SigningKey, run_id: str, mbytes: bytes, mdigest: str | None = None
) -> tuple[Envelope, str]:
    """Sign the Statement for ``mbytes`` (the RFC 8785 bytes of the run's manifest).

    ``mdigest`` is the hex SHA-256 of ``mbytes`` when the caller already has it. Returns
    the DSSE envelope and ``"sha256:<hex>"`` of its payload.
    """
    issued = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    predicate_rest = canonical_fast(
        {
            "attester": {"keyid": key.key_id},
            "issuedAt": issued,
            "nonce": os.urandom(16).hex(),
            "runId": run_id,
        }
    )
    # keys sort as attester < issuedAt < manifest < nonce < runId
    head, _, tail = predicate_rest.partition(b',"nonce":')
    predicate = head + b',"manifest":' + mbytes + b',"nonce":' + tail
    payload = (
        b'{"_type":"'
        + STATEMENT_TYPE.encode()
        + b'","predicate":'
        + predicate
        + b',"predicateType":"'
        + PREDICATE_TYPE.encode()
        + b'","subject":[{"digest":{"sha256":"'
        + (mdigest if mdigest is not None else sha256_hex(mbytes)).encode()
        + b'"},"name":"'
        + SUBJECT_NAME.encode()
        + b'"}]}'
    )
    envelope = sign_envelope(key, PAYLOAD_TYPE, payload)
    return envelope, "sha256:" + sha256_hex(payload)


def write_envelope(run_dir: Path, envelope: Envelope, *, durable: bool) -> Path:
    """Create ``run_dir/attestation.intoto.json``; with ``durable``, fsync it and the folder.

    The run directory is fresh and this file is written once, before any step runs, so an
    exclusive create is enough (no temp file + rename); a crash before the ledger's first
    fsync loses it together with the ledger's ``attestation`` record that holds the same
    envelope.
    """
    target = run_dir / ATTESTATION_FILE
    data = orjson.dumps(envelope, option=_PRETTY) + b"\n"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    if durable:
        dfd = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return target


def verify_attestation(envelope: Any, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Verify a run attestation envelope and return its in-toto Statement.

    Checks, in order: the DSSE signature under ``public_key``, the payload type, that the
    payload is the RFC 8785 form of a JSON object, the statement and predicate types, the
    single subject, and that its SHA-256 equals the digest of the canonical manifest.
    Raises ``ValueError`` naming the failed check.
    """
    payload = verify_envelope(envelope, public_key, PAYLOAD_TYPE)
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"attestation payload: not JSON ({exc})") from exc
    if not isinstance(statement, dict):
        raise ValueError("attestation payload: expected a JSON object")
    try:
        recanonical = canonical(statement)
    except Exception as exc:
        raise ValueError(f"attestation payload: not canonicalizable ({exc})") from exc
    if recanonical != payload:
        raise ValueError("attestation payload: not in RFC 8785 canonical form")
    if statement.get("_type") != STATEMENT_TYPE:
        raise ValueError(
            f"statement._type: expected {STATEMENT_TYPE!r}, got {statement.get('_type')!r}"
        )
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(
            f"statement.predicateType: expected {PREDICATE_TYPE!r}, "
            f"got {statement.get('predicateType')!r}"
        )
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict) or not isinstance(predicate.get("manifest"), dict):
        raise ValueError("statement.predicate.manifest: expected a JSON object")
    for fld in ("runId", "issuedAt"):
        if not isinstance(predicate.get(fld), str):
            raise ValueError(f"statement.predicate.{fld}: expected a string")
    subject = statement.get("subject")
    if (
        not isinstance(subject, list)
        or len(subject) != 1
        or not isinstance(subject[0], dict)
        or subject[0].get("name") != SUBJECT_NAME
        or not isinstance(subject[0].get("digest"), dict)
    ):
        raise ValueError(f"statement.subject: expected one {SUBJECT_NAME!r} with a digest")
    want = subject[0]["digest"].get("sha256")
    got = sha256_hex(canonical(predicate["manifest"]))
    if want != got:
        raise ValueError(
            f"statement.subject[0].digest.sha256: expected the manifest digest {got}, got {want!r}"
        )
    return statement

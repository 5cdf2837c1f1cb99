"""The signed form of a run manifest: an in-toto Statement in a DSSE envelope.

The Statement has one subject (``tenure-run-environment``) whose SHA-256 is the digest of the
manifest, and a predicate holding the manifest with the attester key id and the issue time.
:func:`sign_statement` builds it, :func:`write_envelope` stores it next to the ledger,
:func:`verify_attestation` checks it.

Two predicate types, both read by every reader:

- :data:`PREDICATE_TYPE` (``.../run-environment/v2``, written now): signed once per
  manifest and key, shared by every run started while the manifest is unchanged. A run is
  bound to it by its own ledger: ``run.start`` names the statement's digest and the
  ledger's checkpoint signature covers that record (and the ``attestation`` record holding
  the envelope), so each run directory still verifies offline on its own.
- :data:`PREDICATE_TYPE_V1` (``.../run-environment/v1``, written before): one statement
  per run, its predicate also carrying ``runId`` and a ``nonce``.

Invariants:

- The subject digest of a statement is the SHA-256 of the RFC 8785 bytes of exactly the
  manifest inside its predicate; the payload is the RFC 8785 bytes of the statement.
  :func:`verify_attestation` checks both and refuses anything else.
- The attestation file is created once per run directory, before anything reads it.
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
from ._copies import SharedCopy
from ._format import ATTESTATION_NAME, INTOTO_PAYLOAD_TYPE, INTOTO_STATEMENT_TYPE

__all__ = [
    "ATTESTATION_FILE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PREDICATE_TYPE_V1",
    "STATEMENT_TYPE",
    "SUBJECT_NAME",
    "sign_statement",
    "verify_attestation",
    "write_envelope",
]

STATEMENT_TYPE = INTOTO_STATEMENT_TYPE
PREDICATE_TYPE = "https://tenure.dev/attestation/run-environment/v2"
PREDICATE_TYPE_V1 = "https://tenure.dev/attestation/run-environment/v1"
_PREDICATE_FIELDS = {PREDICATE_TYPE: ("issuedAt",), PREDICATE_TYPE_V1: ("runId", "issuedAt")}
PAYLOAD_TYPE = INTOTO_PAYLOAD_TYPE
SUBJECT_NAME = "tenure-run-environment"
ATTESTATION_FILE = ATTESTATION_NAME
_PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS  # the envelope is ASCII (base64, ids)


def sign_statement(
    key: SigningKey, mbytes: bytes, mdigest: str | None = None
) -> tuple[Envelope, str]:
    """Sign the Statement for ``mbytes`` (the RFC 8785 bytes of a manifest).

    ``mdigest`` is the hex SHA-256 of ``mbytes`` when the caller already has it. Returns
    the DSSE envelope and ``"sha256:<hex>"`` of its payload.
    """
    issued = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    # keys sort as attester < issuedAt < manifest (ASCII strings only: RFC 8785 as is)
    predicate = (
        canonical_fast({"attester": {"keyid": key.key_id}, "issuedAt": issued})[:-1]
        + b',"manifest":'
        + mbytes
        + b"}"
    )
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


def envelope_file_bytes(envelope: Envelope) -> bytes:
    """What :func:`write_envelope` writes for ``envelope`` (compute once, write many)."""
    return orjson.dumps(envelope, option=_PRETTY) + b"\n"


def write_envelope(
    run_dir: Path, envelope: Envelope, *, durable: bool, copy: SharedCopy | None = None
) -> Path:
    """Create ``run_dir/attestation.intoto.json``; with ``durable``, fsync it and the folder.

    ``copy``: the file's bytes for ``envelope`` (:func:`envelope_file_bytes`) shared by the
    runs naming it; the file is then a hard link to an earlier run's copy when it can be
    (see :mod:`._copies`).

    The file is written once per run directory (the runtime writes it at the run's close,
    before the ledger's final fsync), so an exclusive create is enough (no temp file +
    rename); the ledger's ``attestation`` record holds the same envelope.
    """

    def write_new(target: Path, data: bytes) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    target = run_dir / ATTESTATION_FILE
    if copy is None:
        write_new(target, envelope_file_bytes(envelope))
    else:
        copy.place(target, write_new)
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
    payload is the RFC 8785 form of a JSON object, the statement and predicate types (v2, or
    v1 with its ``runId``), the
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
    fields = _PREDICATE_FIELDS.get(statement.get("predicateType"))  # type: ignore[arg-type]
    if fields is None:
        raise ValueError(
            f"statement.predicateType: expected {PREDICATE_TYPE!r} "
            f"(or {PREDICATE_TYPE_V1!r}), got {statement.get('predicateType')!r}"
        )
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict) or not isinstance(predicate.get("manifest"), dict):
        raise ValueError("statement.predicate.manifest: expected a JSON object")
    for fld in fields:
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

"""Proofs for third parties: one record's inclusion, or one checkpoint's consistency.

**Inclusion** proofs are C2SP ``tlog-proof@v1`` (c2sp.org/tlog-proof)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the record's ledger line, without its newline>
    index <record index>
    <base64 hash>            one per line: the RFC 9162 audit path, leaf sibling first
    ...
    <empty line>
    <the signed checkpoint, verbatim>

The ``extra`` line carries the record itself (C2SP: opaque, never trusted implicitly): the
verifier hashes it into the leaf, so a changed record fails the proof. Given the record, the
proof, the signed checkpoint and the public key, anyone can check it (``tenure verify-proof``,
or Go's ``golang.org/x/mod/sumdb/tlog.CheckRecord``).

**Consistency** proofs have no C2SP container; this one follows C2SP tlog-witness's
``add-checkpoint`` body (``old <size>``, the proof lines, an empty line, the checkpoint) and
carries both signed checkpoints, so the older one need not be found elsewhere::

    tenure.dev/tlog-consistency@v1
    old <older size>
    <base64 hash>            RFC 9162 consistency proof lines
    ...
    <empty line>
    <the older signed checkpoint, verbatim>
    <empty line>
    <the newer signed checkpoint, verbatim>

Invariants: a proof is made only from evidence that verifies (:func:`~._verify.verify_run`
first) and only against checkpoints the ledger's own key signed; a proof file is parsed
bounded (:data:`MAX_PROOF_BYTES`) and strictly (every line has its one allowed form).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._format import CHECKPOINT, CHECKPOINT_NAME, LEDGER_NAME
from ._merkle import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ._note import Checkpoint, NoteError, open_checkpoint, parse_checkpoint, parse_note
from ._reader import LedgerReader, read_evidence_file

__all__ = [
    "CONSISTENCY_HEADER",
    "INCLUSION_HEADER",
    "MAX_PROOF_BYTES",
    "ProofCheck",
    "ProofError",
    "prove_consistency",
    "prove_inclusion",
    "verify_proof",
]

INCLUSION_HEADER: Final = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER: Final = "tenure.dev/tlog-consistency@v1"
MAX_PROOF_BYTES: Final = 16 << 20
_ORIGIN_PREFIX: Final = "tenure.local/"


@dataclass(frozen=True, slots=True)
class ProofCheck:
    """A verified proof: what it proves, about which run, against which checkpoint."""

    kind: str  # "inclusion" | "consistency"
    run_id: str
    tree_size: int
    root: str
    index: int | None = None  # inclusion: the record's index
    record: bytes | None = None  # inclusion: the record's ledger line
    old_size: int | None = None  # consistency: the older tree size
    old_root: str | None = None


def _leaves(run_dir: Path) -> tuple[list[bytes], list[bytes]]:
    """Leaf hashes and lines of every record of the ledger."""
    leaves: list[bytes] = []
    lines: list[bytes] = []
    for _, body, _rec in LedgerReader(run_dir / LEDGER_NAME):
        leaves.append(leaf_hash(body))
        lines.append(body)
    return leaves, lines


def _signed_checkpoints(run_dir: Path) -> dict[int, str]:
    """Every signed checkpoint of the run by size: the checkpoint records and the file."""
    notes: dict[int, str] = {}
    for _, _, rec in LedgerReader(run_dir / LEDGER_NAME):
        if rec["kind"] == CHECKPOINT and isinstance(rec.get("note"), str):
            notes[rec["size"]] = rec["note"]
    data = read_evidence_file(run_dir / CHECKPOINT_NAME).decode("utf-8")
    notes[parse_checkpoint(parse_note(data)[0]).size] = data
    return notes


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def prove_inclusion(run_dir: Path, index: int) -> str:
    """The tlog-proof of record ``index`` against the run's latest signed checkpoint.

    The caller verifies the run first. Raises ``ValueError`` for an index the checkpoint
    does not cover.
    """
    leaves, lines = _leaves(run_dir)
    data = read_evidence_file(run_dir / CHECKPOINT_NAME).decode("utf-8")
    size = parse_checkpoint(parse_note(data)[0]).size
    if not 0 <= index < size:
        raise ValueError(
            f"record {index} is not covered by the signed checkpoint (records 0..{size - 1})"
        )
    path = inclusion_proof(leaves[:size], index)
    body = [INCLUSION_HEADER, f"extra {_b64(lines[index])}", f"index {index}"]
    body += [_b64(h) for h in path]
    return "\n".join(body) + "\n\n" + data


def prove_consistency(run_dir: Path, old_size: int) -> str:
    """The consistency proof from the signed checkpoint of ``old_size`` to the latest one.

    Raises ``ValueError`` when no checkpoint of that size was signed (a proof from an
    unsigned size would prove nothing to a third party).
    """
    leaves, _ = _leaves(run_dir)
    notes = _signed_checkpoints(run_dir)
    new_size = max(notes)
    if old_size not in notes:
        sizes = ", ".join(map(str, sorted(notes)))
        raise ValueError(f"no signed checkpoint of size {old_size} (signed sizes: {sizes})")
    if not 0 < old_size <= new_size:
        raise ValueError(f"old size {old_size} must be in 1..{new_size}")
    proof = consistency_proof(leaves[:new_size], old_size)
    head = [CONSISTENCY_HEADER, f"old {old_size}", *map(_b64, proof)]
    return "\n".join(head) + "\n\n" + notes[old_size] + "\n" + notes[new_size]


# --- verification -----------------------------------------------------------------------


def _hash(line: str, n: int) -> bytes:
    try:
        h = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProofError(f"proof line {n}: not base64") from exc
    if len(h) != 32:
        raise ProofError(f"proof line {n}: a hash must be 32 bytes, got {len(h)}")
    return h


def _decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (text != "0" and text[0] == "0"):
        raise ProofError(f"{what} {text!r} is not a decimal without leading zeros")
    if len(text) > 19:
        raise ProofError(f"{what} {text!r} is too large")
    return int(text)


def _split_notes(rest: list[str], count: int) -> list[str]:
    """``count`` signed notes from ``rest``: text lines, an empty line, signature lines."""
    notes: list[str] = []
    i = 0
    for k in range(count):
        start = i
        while i < len(rest) and rest[i] != "":
            i += 1
        i += 1  # the empty line between text and signatures
        if i >= len(rest) or not rest[i].startswith("\u2014 "):
            raise ProofError(f"checkpoint {k + 1}: expected signature lines after its text")
        while i < len(rest) and rest[i].startswith("\u2014 "):
            i += 1
        notes.append("\n".join(rest[start:i]) + "\n")
        if k + 1 < count:
            if i >= len(rest) or rest[i] != "":
                raise ProofError(f"checkpoint {k + 1}: expected an empty line after it")
            i += 1
    if any(line for line in rest[i:]):
        raise ProofError("unexpected text after the checkpoint")
    return notes


def _open(note: str, key: Ed25519PublicKey, run_id: str | None) -> tuple[str, Checkpoint]:
    try:
        origin = parse_checkpoint(parse_note(note)[0]).origin
    except NoteError as exc:
        raise ProofError(f"checkpoint: {exc}") from exc
    if not origin.startswith(_ORIGIN_PREFIX):
        raise ProofError(f"checkpoint origin {origin!r} is not a Tenure run's")
    got = origin[len(_ORIGIN_PREFIX) :]
    if run_id is not None and got != run_id:
        raise ProofError(f"the checkpoint is run {got!r}'s, not {run_id!r}'s")
    try:
        return got, open_checkpoint(note, origin, key)
    except NoteError as exc:
        raise ProofError(f"checkpoint: {exc}") from exc


def verify_proof(
    proof: str | bytes,
    key: Ed25519PublicKey,
    *,
    record: bytes | None = None,
    expect_run_id: str | None = None,
) -> ProofCheck:
    """Check an inclusion or consistency proof; :class:`ProofError` says what failed.

    ``record``, when given, must be the proven record's ledger line (a trailing newline is
    ignored); ``expect_run_id`` the run the checkpoint must belong to.
    """
    if isinstance(proof, bytes):
        if len(proof) > MAX_PROOF_BYTES:
            raise ProofError(f"proof larger than {MAX_PROOF_BYTES} bytes")
        try:
            proof = proof.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProofError("proof is not UTF-8") from exc
    lines = proof.split("\n")
    if lines[0] == INCLUSION_HEADER:
        return _verify_inclusion(lines, key, record, expect_run_id)
    if lines[0] == CONSISTENCY_HEADER:
        return _verify_consistency(lines, key, expect_run_id)
    raise ProofError(f"first line must be {INCLUSION_HEADER!r} or {CONSISTENCY_HEADER!r}")


def _verify_inclusion(
    lines: list[str], key: Ed25519PublicKey, record: bytes | None, run_id: str | None
) -> ProofCheck:
    i = 1
    extra: bytes | None = None
    if len(lines) > i and lines[i].startswith("extra "):
        try:
            extra = base64.b64decode(lines[i][6:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProofError("extra: not base64") from exc
        i += 1
    if len(lines) <= i or not lines[i].startswith("index "):
        raise ProofError(f"line {i + 1}: expected 'index <n>'")
    index = _decimal(lines[i][6:], "index")
    i += 1
    path = []
    while i < len(lines) and lines[i] != "":
        path.append(_hash(lines[i], i + 1))
        i += 1
    note = _split_notes(lines[i + 1 :], 1)[0]
    got_run, cp = _open(note, key, run_id)
    if record is not None:
        record = record.removesuffix(b"\n")
        if extra is not None and extra != record:
            raise ProofError("the given record is not the record the proof carries")
    data = record if record is not None else extra
    if data is None:
        raise ProofError("no record: the proof carries none (no 'extra' line) and none was given")
    verify_inclusion(index, cp.size, leaf_hash(data), path, cp.root)
    return ProofCheck("inclusion", got_run, cp.size, cp.root.hex(), index=index, record=data)


def _verify_consistency(lines: list[str], key: Ed25519PublicKey, run_id: str | None) -> ProofCheck:
    if len(lines) < 2 or not lines[1].startswith("old "):
        raise ProofError("line 2: expected 'old <size>'")
    old_size = _decimal(lines[1][4:], "old size")
    i = 2
    path = []
    while i < len(lines) and lines[i] != "":
        path.append(_hash(lines[i], i + 1))
        i += 1
    old_note, new_note = _split_notes(lines[i + 1 :], 2)
    old_run, old = _open(old_note, key, run_id)
    new_run, new = _open(new_note, key, old_run)
    if old.size != old_size:
        raise ProofError(f"the older checkpoint has size {old.size}, the proof says {old_size}")
    verify_consistency(old.size, new.size, path, old.root, new.root)
    return ProofCheck(
        "consistency",
        new_run,
        new.size,
        new.root.hex(),
        old_size=old.size,
        old_root=old.root.hex(),
    )

"""C2SP signed notes and tlog-checkpoints (Ed25519, signature type 0x01).

A signed note is UTF-8 text ending in ``\\n``, a blank line, then one or more signature
lines ``— <name> base64(keyid[4] || signature)`` (U+2014 em dash). The signed message is
the text including its final newline. ``keyid = SHA-256(name || 0x0A || 0x01 || pubkey)[:4]``.

A checkpoint's text is ``<origin>\\n<size>\\n<base64 root>\\n`` (plus optional extension
lines); Tenure's origin and key name are ``tenure.local/<run_id>``.

Invariants, each with its own ``raise`` (:class:`NoteError`):

- A note is accepted only if at least one signature by the trusted (name, key) verifies,
  and no signature that claims the trusted name and key id fails (C2SP: verifiers SHOULD
  reject on any failing known key). Signatures by unknown keys are ignored.
- Text must be valid UTF-8 without control characters other than ``\\n``; key names have
  no spaces and no ``+``; at most :data:`MAX_SIGNATURES` signature lines.
- A checkpoint's size is decimal without leading zeros, its root exactly 32 bytes of
  standard base64, and its origin the one the caller expects.
- A signature line is in canonical standard base64 (the unsigned bits of its last
  character zero): a note has one spelling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .._errors import EvidenceError
from ..crypto import SigningKey

__all__ = [
    "ED25519_TYPE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteError",
    "NoteSignature",
    "format_checkpoint",
    "note_key_id",
    "open_checkpoint",
    "origin_for",
    "parse_checkpoint",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
    "verifier_key",
    "verify_note",
]

ED25519_TYPE = 0x01
MAX_SIGNATURES = 100
_DASH = "\u2014 "
_ORIGIN_PREFIX = "tenure.local/"


class NoteError(EvidenceError):
    """A signed note or checkpoint is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the key name, the 4-byte key id and the raw signature."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed tlog-checkpoint body."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def origin_for(run_id: str) -> str:
    """The checkpoint origin (and key name) of a run: ``tenure.local/<run_id>``."""
    return _ORIGIN_PREFIX + run_id


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


_BAD_NAME = re.compile(r"[\s+]")
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f]")  # every C0 control but \n, and DEL


def _check_name(name: str) -> None:
    if not name or _BAD_NAME.search(name):
        raise NoteError(f"key name {name!r}: must be non-empty without spaces or '+'")


def note_key_id(name: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x01 || pubkey)[:4]`` (C2SP signed-note, Ed25519)."""
    raw = public_key if isinstance(public_key, bytes) else _raw(public_key)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + raw).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The vkey string ``<name>+<hex keyid>+<base64(0x01 || pubkey)>``."""
    raw = _raw(public_key)
    b64 = base64.b64encode(bytes([ED25519_TYPE]) + raw).decode("ascii")
    return f"{name}+{note_key_id(name, raw).hex()}+{b64}"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    bad = _CONTROL.search(text)
    if bad is not None:
        raise NoteError(f"note text contains control character U+{ord(bad.group()):04X}")


def sign_note(text: str, name: str, key: SigningKey | Ed25519PrivateKey) -> str:
    """A signed note over ``text`` with one Ed25519 signature under ``name``."""
    _check_name(name)
    _check_text(text)
    public: Ed25519PublicKey | bytes
    if isinstance(key, SigningKey):
        private, public = key.private_key, key.public_raw  # derived once per key
    else:
        private, public = key, key.public_key()
    sig = private.sign(text.encode("utf-8"))
    blob = base64.b64encode(note_key_id(name, public) + sig).decode("ascii")
    return f"{text}\n{_DASH}{name} {blob}\n"


def parse_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines (no verification)."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text = note[: split + 1]
    sig_block = note[split + 2 :]
    _check_text(text)
    if not sig_block.endswith("\n"):
        raise NoteError("note signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    sigs: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError(f"note signature line {line[:40]!r} does not start with '— '")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2:
            raise NoteError(f"note signature line {line[:40]!r}: expected '<name> <base64>'")
        name, b64 = parts
        _check_name(name)
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NoteError(f"note signature by {name!r}: not valid base64") from exc
        if base64.b64encode(blob).decode("ascii") != b64:
            # The signature line is not signed: another spelling of the same bytes (padding
            # bits set) would verify too, and a closing checkpoint record is checked byte
            # for byte against its note.
            raise NoteError(f"note signature by {name!r}: not in canonical base64")
        if len(blob) < 5:
            raise NoteError(f"note signature by {name!r}: too short")
        sigs.append(NoteSignature(name, blob[:4], blob[4:]))
    return text, sigs


def verify_note(note: str | bytes, name: str, public_key: Ed25519PublicKey) -> str:
    """Return the note's text if a signature by (``name``, ``public_key``) verifies."""
    text, sigs = parse_note(note)
    kid = note_key_id(name, public_key)
    message = text.encode("utf-8")
    verified = False
    for sig in sigs:
        if sig.name != name or sig.key_id != kid:
            continue  # unknown key: ignored, as the spec requires
        try:
            public_key.verify(sig.signature, message)
        except InvalidSignature as exc:
            raise NoteError(f"note signature by {name!r} (key id {kid.hex()}) is invalid") from exc
        verified = True
    if not verified:
        raise NoteError(f"note has no signature by the trusted key {name!r} (key id {kid.hex()})")
    return text


def format_checkpoint(origin: str, size: int, root: bytes) -> str:
    """The tlog-checkpoint note text for a tree of ``size`` leaves with ``root``."""
    if size < 0 or len(root) != 32:
        raise ValueError(f"checkpoint: bad size {size} or root length {len(root)}")
    if not origin or "\n" in origin:
        raise ValueError(f"checkpoint: bad origin {origin!r}")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (the note text, already verified)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint: expected origin, size and root lines")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin:
        raise NoteError("checkpoint: empty origin")
    if not size_s.isdigit() or not size_s.isascii() or (size_s != "0" and size_s[0] == "0"):
        raise NoteError(f"checkpoint: size {size_s!r} is not a decimal without leading zeros")
    try:
        root = base64.b64decode(root_s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("checkpoint: root is not valid base64") from exc
    if len(root) != 32:
        raise NoteError(f"checkpoint: root must be 32 bytes, got {len(root)}")
    extensions = tuple(lines[3:-1])
    if any(not e for e in extensions):
        raise NoteError("checkpoint: empty extension line")
    return Checkpoint(origin, int(size_s), root, extensions)


def sign_checkpoint(origin: str, size: int, root: bytes, key: SigningKey) -> str:
    """A signed checkpoint note; the key name is the origin."""
    return sign_note(format_checkpoint(origin, size, root), origin, key)


def open_checkpoint(note: str | bytes, origin: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Verify a checkpoint note signed by ``origin``'s key and return its body."""
    text = verify_note(note, origin, public_key)
    cp = parse_checkpoint(text)
    if cp.origin != origin:
        raise NoteError(f"checkpoint: origin {cp.origin!r}, expected {origin!r}")
    return cp

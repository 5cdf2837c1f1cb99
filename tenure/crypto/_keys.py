"""Ed25519 signing keys: generation, storage outside the evidence, and key ids.

The embedded default key lives in a per-user data directory (or ``TENURE_KEY_DIR``), never
in the evidence directory: a key lying next to the records it signs proves nothing. The
private key file is created with mode 0600; a key file that is missing (when one was
named), unreadable, or not an Ed25519 PEM key is a :class:`GovernanceUnavailable` naming
the path, never a silent fallback to a fresh key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .._errors import GovernanceUnavailable
from .._files import read_regular_file
from .._util import final

__all__ = [
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "SigningKey",
    "default_key_dir",
    "dsse_key_id",
    "generate_key_files",
    "key_id_of",
    "load_public_key",
    "load_signing_key",
    "public_key_pem",
]

PRIVATE_KEY_NAME = "tenure.key"
PUBLIC_KEY_NAME = "tenure.pub"
#: A PEM Ed25519 key is about 120 bytes; a key file larger than this is not one.
MAX_KEY_FILE_BYTES = 64 * 1024


def dsse_key_id(public_key: Ed25519PublicKey) -> str:
    """The key id standard DSSE / in-toto tooling computes for this key (securesystemslib's
    default: SHA-256 of the canonical JSON ``{"keytype": "ed25519", "keyval": {"public":
    <hex>}, "scheme": "ed25519"}``), so a key imported the standard way matches it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = {"keytype": "ed25519", "keyval": {"public": raw.hex()}, "scheme": "ed25519"}
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":")).encode("ascii")
    return hashlib.sha256(canonical).hexdigest()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A stable key id: the first 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM form of ``public_key``."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@final
@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key with its id and (optional) origin path."""

    private_key: Ed25519PrivateKey
    key_id: str
    path: Path | None = None
    # Derived once: every run writes the public key into its directory and its records.
    _public: Ed25519PublicKey = field(init=False, repr=False, compare=False)
    _public_raw: bytes = field(init=False, repr=False, compare=False)
    _public_pem: bytes = field(init=False, repr=False, compare=False)
    _dsse_key_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        public = self.private_key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        object.__setattr__(self, "_public", public)
        object.__setattr__(self, "_public_raw", raw)
        object.__setattr__(self, "_public_pem", public_key_pem(public))
        object.__setattr__(self, "_dsse_key_id", dsse_key_id(public))

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh in-memory key (tests, ephemeral runtimes)."""
        private = Ed25519PrivateKey.generate()
        return cls(private, key_id_of(private.public_key()))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The verifying half."""
        return self._public

    @property
    def public_raw(self) -> bytes:
        """The 32 raw public key bytes."""
        return self._public_raw

    @property
    def public_text(self) -> str:
        """The public key as a policy declares an approver: ``"ed25519:<base64>"``."""
        return "ed25519:" + base64.b64encode(self._public_raw).decode("ascii")

    @property
    def public_pem(self) -> bytes:
        """The SubjectPublicKeyInfo PEM form of the public key."""
        return self._public_pem

    @property
    def dsse_key_id(self) -> str:
        """The key id DSSE envelopes carry (:func:`dsse_key_id`)."""
        return self._dsse_key_id

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        return self.private_key.sign(message)


def default_key_dir() -> Path:
    """``$TENURE_KEY_DIR`` or the per-user data directory for Tenure keys."""
    env = os.environ.get("TENURE_KEY_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("tenure", appauthor=False)) / "keys"


def generate_key_files(directory: Path, *, overwrite: bool = False) -> SigningKey:
    """Create ``tenure.key`` (0600) and ``tenure.pub`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path = directory / PRIVATE_KEY_NAME
    if priv_path.exists() and not overwrite:
        raise FileExistsError(f"{priv_path}: a key already exists (use overwrite to replace)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(priv_path, flags, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(priv_path, 0o600)
    (directory / PUBLIC_KEY_NAME).write_bytes(public_key_pem(private.public_key()))
    return SigningKey(private, key_id_of(private.public_key()), priv_path)


def load_signing_key(path: Path | None = None, *, create: bool = True) -> SigningKey:
    """Load the private key at ``path`` (or the default one, created on first use)."""
    if path is None:
        directory = default_key_dir()
        path = directory / PRIVATE_KEY_NAME
        if create and not path.exists():
            try:
                return generate_key_files(directory)
            except FileExistsError:
                pass  # another process created it first: load theirs
            except OSError as exc:
                raise GovernanceUnavailable(
                    f"cannot create the signing key in {directory}: {exc.strerror or exc}",
                    check="key.create",
                ) from exc
    try:
        data = read_regular_file(path, MAX_KEY_FILE_BYTES, "a key file", follow_symlinks=True)
    except FileNotFoundError as exc:
        raise GovernanceUnavailable(
            f"{path}: signing key file is missing", check="key.load"
        ) from exc
    except OSError as exc:
        raise GovernanceUnavailable(
            f"{path}: signing key file is unreadable: {exc.strerror or exc}", check="key.load"
        ) from exc
    except ValueError as exc:
        raise GovernanceUnavailable(
            f"{path}: signing key file is unreadable: {exc}", check="key.load"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise GovernanceUnavailable(
            f"{path}: not a PEM-encoded unencrypted Ed25519 private key", check="key.load"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise GovernanceUnavailable(
            f"{path}: expected an Ed25519 key, found {type(key).__name__}", check="key.load"
        )
    return SigningKey(key, key_id_of(key.public_key()), path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM public key (``ValueError`` naming the file if it is not Ed25519)."""
    try:
        data = read_regular_file(path, MAX_KEY_FILE_BYTES, "a key file", follow_symlinks=True)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read public key: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: cannot read public key: {exc}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{path}: not a PEM-encoded public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: expected an Ed25519 public key, found {type(key).__name__}")
    return key

"""A failed verification check, as every rule module of the verifier raises it."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._report_model import Finding

__all__ = ["Fail", "raw_key"]


class Fail(Exception):
    """A failed check: code, record index and kind (or file), message."""

    def __init__(self, code: str, index: int | None, kind: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.index = index
        self.kind = kind
        self.message = message

    def finding(self) -> Finding:
        """The failure as a report finding."""
        return Finding(self.code, self.message, self.index, self.kind)


def raw_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

"""Canonical bytes and digests.

Leases, attestations and approvals are canonicalized with RFC 8785 through the ``rfc8785``
package: it refuses integers outside the I-JSON range and non-finite floats instead of
silently mapping two values to the same bytes (``jcs`` does).

Ledger records are written on the hot path, where ``rfc8785`` costs ~35 µs a record. They
use :func:`record_bytes`: compact JSON with sorted keys (orjson, ~0.6 µs), which is exactly
the RFC 8785 form on the domain the ledger writer restricts records to (ASCII keys, no
floats, integers within ±(2**53 - 1)); :func:`check_record_domain` checks that domain.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import rfc8785

__all__ = [
    "b64d",
    "b64e",
    "canonical",
    "canonical_fast",
    "check_record_domain",
    "digest",
    "record_bytes",
    "sha256_hex",
]

_MAX_SAFE_INT = 2**53 - 1


def canonical(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of ``obj`` (raises on values JCS cannot represent)."""
    return rfc8785.dumps(obj)


_SORTED = orjson.OPT_SORT_KEYS


def canonical_fast(obj: Any) -> bytes:
    """:func:`canonical` bytes, through :func:`record_bytes` when ``obj`` is in its domain.

    Byte-identical to ``rfc8785.dumps`` (property-tested); values outside the domain (floats,
    large integers, non-ASCII keys) go to ``rfc8785``, which represents them or refuses.
    """
    try:
        check_record_domain(obj)
        return record_bytes(obj)
    except (ValueError, UnicodeEncodeError):
        return rfc8785.dumps(obj)


def record_bytes(obj: dict[str, Any]) -> bytes:
    """Canonical bytes of a ledger record (RFC 8785 on the ledger's restricted domain).

    orjson with sorted keys writes exactly what ``json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` writes on that domain (the tests compare
    the two, and with ``rfc8785``), nine times faster.
    """
    return orjson.dumps(obj, option=_SORTED)


def check_record_domain(obj: Any, path: str = "$") -> None:
    """Raise ``ValueError`` naming the path of a value outside the ledger's JSON domain."""
    if not _in_domain(obj):
        _domain_error(obj, path)


def _in_domain(obj: Any) -> bool:
    # The same rules as _domain_error, without building a path for every value: this runs
    # for every signed lease, and the paths are only needed to explain a refusal.
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, int):
        return abs(obj) <= _MAX_SAFE_INT
    if isinstance(obj, float):
        return False
    if isinstance(obj, list):
        for item in obj:  # noqa: SIM110 - a loop, not all(genexpr): this is a hot path
            if not _in_domain(item):
                return False
        return True
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not (isinstance(key, str) and key.isascii() and _in_domain(value)):
                return False
        return True
    return False


def _domain_error(obj: Any, path: str) -> None:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, int):
        if abs(obj) > _MAX_SAFE_INT:
            raise ValueError(f"{path}: integer {obj} is outside ±(2**53-1)")
        return
    if isinstance(obj, float):
        raise ValueError(f"{path}: floats are not allowed in ledger records ({obj!r})")
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            _domain_error(item, f"{path}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str) or not key.isascii():
                raise ValueError(f"{path}: key {key!r} is not an ASCII string")
            _domain_error(value, f"{path}.{key}")
        return
    raise ValueError(f"{path}: {type(obj).__name__} is not a JSON value")


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    """``"sha256:<hex>"``, the digest form used in leases, records and attestations."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64e(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    """Decode standard or URL-safe base64 (DSSE verifiers must accept both)."""
    padded = text + "=" * (-len(text) % 4)
    if "-" in text or "_" in text:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)

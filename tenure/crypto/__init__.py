"""Shared cryptographic helpers: canonical JSON and value digests, Ed25519 keys, DSSE.

Every subsystem signs or hashes through this package, so the encodings are defined once:
RFC 8785 canonical JSON (:mod:`._canonical`), Ed25519 keys and their ids (:mod:`._keys`) and
DSSE envelopes (:mod:`._dsse`). It imports nothing else of Tenure but the error tree.
"""

from ._keys import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    SigningKey,
    default_key_dir,
    dsse_key_id,
    generate_key_files,
    key_id_of,
    load_public_key,
    load_signing_key,
    public_key_pem,
)

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

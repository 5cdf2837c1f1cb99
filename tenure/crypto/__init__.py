"""Shared cryptographic helpers: canonical JSON and value digests, Ed25519 keys, DSSE.

Every subsystem signs or hashes through this package, so the encodings are defined once:
RFC 8785 canonical JSON (:mod:`._canonical`), Ed25519 keys and their ids (:mod:`._keys`) and
DSSE envelopes (:mod:`._dsse`). It imports nothing else of Tenure but the error tree.
"""

from ._canonical import (
    b64d,
    b64e,
    canonical,
    canonical_fast,
    digest,
    record_bytes,
    sha256_hex,
)
from ._dsse import (
    Envelope,
    pae,
    sign_envelope,
    verify_envelope,
)
from ._grants import (
    GRANT_PAYLOAD_TYPE,
    Grant,
    action_digest,
    args_digest_of,
    args_encoding,
    key_text,
    open_grant,
    parse_key_text,
    sign_grant,
)
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
from ._snapshot import (
    NotCanonical,
    Snapshot,
    decision_view,
    snapshot_call,
)
from ._values import (
    dataclass_fields,
    model_fields,
    qualified_name,
    value_digest,
)

__all__ = [
    "GRANT_PAYLOAD_TYPE",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "Envelope",
    "Grant",
    "NotCanonical",
    "SigningKey",
    "Snapshot",
    "action_digest",
    "args_digest_of",
    "args_encoding",
    "b64d",
    "b64e",
    "canonical",
    "canonical_fast",
    "dataclass_fields",
    "decision_view",
    "default_key_dir",
    "digest",
    "dsse_key_id",
    "generate_key_files",
    "key_id_of",
    "key_text",
    "load_public_key",
    "load_signing_key",
    "model_fields",
    "open_grant",
    "pae",
    "parse_key_text",
    "public_key_pem",
    "qualified_name",
    "record_bytes",
    "sha256_hex",
    "sign_envelope",
    "sign_grant",
    "snapshot_call",
    "value_digest",
    "verify_envelope",
]

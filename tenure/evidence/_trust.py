"""Which public key the verifier trusts: the one given, else the copy shipped with the evidence.

A key given by the caller (an ``Ed25519PublicKey`` or a PEM file) is trusted; a different
copy in the run directory is noted (``key.copy_differs``) and ignored. Without one, the copy
in the bundle, else in the run directory, is used with a loud ``key.run_copy`` warning:
whoever can rewrite the evidence can replace that copy too. Key files are read bounded,
regular files only, like all evidence.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import load_public_key
from ._fail import Fail, raw_key
from ._format import PUBLIC_KEY_NAME
from ._reader import MAX_SMALL_FILE_BYTES, LedgerReadError, read_evidence_file
from ._report_model import Finding, VerifyReport

__all__ = ["coerce_key", "resolve_key"]


def resolve_key(
    rep: VerifyReport,
    run_dir: Path,
    given: Ed25519PublicKey | None,
    bundle_key: Path | None,
) -> Ed25519PublicKey:
    copy = run_dir / PUBLIC_KEY_NAME
    if given is not None:
        rep.key_source = "given"
        if copy.is_file():
            try:
                if raw_key(_load_key(copy)) != raw_key(given):
                    rep.warnings.append(
                        Finding("key.copy_differs", f"{copy} differs from the given key (ignored)")
                    )
            except Fail:
                rep.warnings.append(
                    Finding("key.copy_differs", f"{copy} is not a valid public key (ignored)")
                )
        return given
    source, path = (
        ("bundle copy", bundle_key) if bundle_key is not None else ("run-directory copy", copy)
    )
    if not path.exists():
        raise Fail(
            "key.missing",
            None,
            PUBLIC_KEY_NAME,
            f"no public key: none given and {path} is missing",
        )
    key = _load_key(path)
    rep.key_source = source
    rep.warnings.append(
        Finding(
            "key.run_copy",
            f"trusted only {path}, the key copy shipped with the evidence: whoever can rewrite "
            "the evidence can replace it too; pass the runtime's public key (--key) to verify",
        )
    )
    return key


def _load_key(path: Path) -> Ed25519PublicKey:
    try:
        read_evidence_file(path, MAX_SMALL_FILE_BYTES)
        return load_public_key(path)
    except (LedgerReadError, ValueError) as exc:
        raise Fail("key.invalid", None, PUBLIC_KEY_NAME, str(exc)) from exc


def coerce_key(key: Ed25519PublicKey | Path | str | None) -> Ed25519PublicKey | None:
    if key is None or isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, str | Path):
        return _load_key(Path(key))
    raise TypeError(f"key must be an Ed25519PublicKey or a PEM file path, got {key!r}")

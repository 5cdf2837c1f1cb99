"""Export a run from the backend: one directory per evidence segment, and the index.

The layout is :mod:`tenure.evidence._cluster`'s (verified there, offline, with the
operator's key): each segment's lines are written back byte for byte with its latest signed
checkpoint, the public key its writer declared, the operator's certificate of that key if
it declared one, and the attestation envelope its ledger holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...crypto import b64d, public_key_pem
from ...evidence._certs import CERT_NAME
from ...evidence._cluster import CLUSTER_FORMAT, CLUSTER_INDEX_NAME
from ...evidence._format import (
    ATTESTATION,
    ATTESTATION_NAME,
    CHECKPOINT_NAME,
    LEDGER_NAME,
    PUBLIC_KEY_NAME,
    valid_run_id,
)
from ._protocols import Backend
from ._types import SegmentInfo

__all__ = ["export_run"]


def _attestation(lines: list[bytes]) -> Any:
    for line in lines[:4]:
        rec = orjson.loads(line)
        if isinstance(rec, dict) and rec.get("kind") == ATTESTATION:
            return rec.get("envelope")
    return None


async def export_run(backend: Backend, run_id: str, out: Path) -> list[str]:
    """Write ``run_id``'s segments under ``out`` (a new directory); the segment ids.

    Raises ``ValueError`` for a run id that is not one, a run the backend holds no
    evidence of, or an ``out`` that exists already.
    """
    if not valid_run_id(run_id):
        raise ValueError(f"{run_id!r} is not a run id")
    segments = await backend.evidence.segments(run_id)
    if not segments:
        raise ValueError(f"the backend holds no evidence of run {run_id}")
    fetched = [(seg, *await backend.evidence.records(seg.id)) for seg in segments]
    await anyio.to_thread.run_sync(_write, out, run_id, fetched)
    return [s.id for s in segments]


def _write(
    out: Path, run_id: str, fetched: list[tuple[SegmentInfo, list[bytes], str | None]]
) -> None:
    if out.exists():
        raise ValueError(f"{out} already exists; refusing to overwrite it")
    out.mkdir(parents=True)
    index = []
    for seg, lines, note in fetched:
        seg_dir = out / seg.id
        seg_dir.mkdir()
        (seg_dir / LEDGER_NAME).write_bytes(b"".join(lines))
        if note is not None:
            (seg_dir / CHECKPOINT_NAME).write_text(note, encoding="utf-8")
        pubkey = Ed25519PublicKey.from_public_bytes(b64d(str(seg.meta["pubkey"])))
        (seg_dir / PUBLIC_KEY_NAME).write_bytes(public_key_pem(pubkey))
        certificate = seg.meta.get("certificate")
        if certificate:
            (seg_dir / CERT_NAME).write_text(json.dumps(certificate), encoding="utf-8")
        envelope = _attestation(lines)
        if envelope is not None:
            (seg_dir / ATTESTATION_NAME).write_text(json.dumps(envelope), encoding="utf-8")
        index.append(
            {
                "id": seg.id,
                "parent": seg.parent,
                "parent_index": seg.parent_index,
                "name": str(seg.meta.get("name", "")),
                "key": str(seg.meta.get("key", "")),
                "records": len(lines),
            }
        )
    body = {"format": CLUSTER_FORMAT, "run": run_id, "segments": index}
    (out / CLUSTER_INDEX_NAME).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

"""Audit bundles: one run's evidence with its witness copy and public key, for offline audit.

A bundle is a directory (or the same directory as a ``.tar.gz``)::

    manifest.json          what is inside, with the SHA-256 of every file
    tenure.pub             the runtime's public key (from its key directory, not the run's copy)
    witness.checkpoint     the witness copy of the run's latest checkpoint, when there is one
    <run_id>/ledger.jsonl  the run directory, as the runtime wrote it
    <run_id>/checkpoint
    <run_id>/tenure.pub
    <run_id>/attestation.intoto.json

The manifest (``format`` :data:`BUNDLE_FORMAT`) lists its runs in ``runs`` — one entry per
run directory — so that a run whose evidence spans several segments (distributed workers)
can be exported into one bundle with one entry per segment; :func:`open_bundle` verifies a
bundle of exactly one run today and says so for more.

Invariants:

- Reading a bundle trusts nothing in it: the manifest is parsed bounded, every file it
  lists must exist, be a regular file and match its digest, and nothing unlisted is read.
- A ``.tar.gz`` is unpacked with :mod:`tarfile`'s ``data`` filter (no links, devices, absolute
  paths or ``..``), into a private temporary directory removed afterwards, and refused if it
  holds more than :data:`MAX_BUNDLE_FILES` entries or :data:`MAX_BUNDLE_BYTES` bytes.
- Writing a bundle never modifies the run directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from .._version import __version__
from ..crypto import public_key_pem
from ._fail import Fail
from ._format import (
    ATTESTATION_NAME,
    BUNDLE_MANIFEST_NAME,
    BUNDLE_WITNESS_NAME,
    CHECKPOINT_NAME,
    LEDGER_NAME,
    PUBLIC_KEY_NAME,
    valid_run_id,
)
from ._reader import LedgerReadError, loads_bounded, open_evidence, read_evidence_file

__all__ = ["BUNDLE_FORMAT", "Bundle", "open_bundle", "write_bundle"]

BUNDLE_FORMAT: Final = "tenure-audit-bundle/1"
MAX_BUNDLE_FILES: Final = 64
MAX_BUNDLE_BYTES: Final = 16 << 30
_RUN_FILES: Final = (LEDGER_NAME, CHECKPOINT_NAME, PUBLIC_KEY_NAME, ATTESTATION_NAME)


@dataclass
class Bundle:
    """An opened bundle: its run directory, witness copy and key, or why it is refused."""

    root: Path
    run_id: str = ""
    run_dir: Path = Path()
    witness: Path | None = None
    public_key: Path | None = None
    error: Fail | None = None
    _files: dict[str, str] | None = None

    def check(self, expect_run_id: str | None) -> None:
        """Raise :class:`Fail` unless the manifest is sound and every file matches it."""
        if self.error is not None:
            raise self.error
        if expect_run_id is not None and expect_run_id != self.run_id:
            raise Fail(
                "run.binding",
                None,
                BUNDLE_MANIFEST_NAME,
                f"the bundle holds run {self.run_id!r}, not {expect_run_id!r}",
            )
        for rel, want in (self._files or {}).items():
            got = _file_digest(self.root / rel)
            if got != want:
                raise Fail(
                    "bundle.manifest",
                    None,
                    BUNDLE_MANIFEST_NAME,
                    f"{rel}: digest {got} does not match the manifest's {want}",
                )


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        fd = open_evidence(path)
    except (LedgerReadError, OSError) as exc:
        raise Fail("bundle.manifest", None, BUNDLE_MANIFEST_NAME, f"{path}: {exc}") from exc
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _bad(root: Path, why: str) -> Bundle:
    return Bundle(root, error=Fail("bundle.manifest", None, BUNDLE_MANIFEST_NAME, why))


def _load(root: Path) -> Bundle:
    mpath = root / BUNDLE_MANIFEST_NAME
    try:
        manifest = loads_bounded(read_evidence_file(mpath))
    except (LedgerReadError, OSError, ValueError) as exc:
        return _bad(root, f"{mpath}: {exc}")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        return _bad(root, f"{mpath}: not a {BUNDLE_FORMAT} manifest")
    runs, files = manifest.get("runs"), manifest.get("files")
    if not isinstance(runs, list) or not runs or not isinstance(files, dict):
        return _bad(root, f"{mpath}: 'runs' must be a non-empty list and 'files' an object")
    if len(runs) != 1:
        return _bad(root, f"{mpath}: holds {len(runs)} run segments; this verifier reads one")
    entry = runs[0]
    run_id = entry.get("run_id") if isinstance(entry, dict) else None
    if not valid_run_id(run_id) or entry.get("dir") != run_id:
        return _bad(root, f"{mpath}: runs[0] must name a valid run_id and dir equal to it")
    listed: dict[str, str] = {}
    for rel, want in files.items():
        parts = Path(rel).parts if isinstance(rel, str) else ()
        if not parts or any(p in ("", ".", "..") for p in parts) or Path(rel).is_absolute():
            return _bad(root, f"{mpath}: file name {rel!r} is not a plain relative path")
        if not isinstance(want, str):
            return _bad(root, f"{mpath}: digest of {rel!r} is not a string")
        listed[rel] = want
    if f"{run_id}/{LEDGER_NAME}" not in listed:
        return _bad(root, f"{mpath}: does not list {run_id}/{LEDGER_NAME}")
    witness = BUNDLE_WITNESS_NAME if BUNDLE_WITNESS_NAME in listed else None
    key = PUBLIC_KEY_NAME if PUBLIC_KEY_NAME in listed else None
    return Bundle(
        root,
        run_id=run_id,
        run_dir=root / run_id,
        witness=root / witness if witness else None,
        public_key=root / key if key else None,
        _files=listed,
    )


def _unpack(archive: Path, into: Path) -> str | None:
    """Unpack a bundle archive; the name of its top folder, or ``None`` if refused."""
    # The archive is evidence too: a FIFO named *.tar.gz must not block the verifier.
    with (
        os.fdopen(open_evidence(archive), "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:gz") as tar,
    ):
        members = []
        total = 0
        for m in tar:
            members.append(m)
            total += m.size
            if len(members) > MAX_BUNDLE_FILES or total > MAX_BUNDLE_BYTES:
                return None
            if not (m.isfile() or m.isdir()):
                return None
        tops = {Path(m.name).parts[0] for m in members if Path(m.name).parts}
        if len(tops) != 1:
            return None
        tar.extractall(into, members=members, filter="data")
    return tops.pop()


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[Bundle | None]:
    """Open ``path`` as a bundle (``None`` when it is a plain run directory)."""
    if path.is_dir():
        yield _load(path) if (path / BUNDLE_MANIFEST_NAME).exists() else None
        return
    if not path.name.endswith((".tar.gz", ".tgz")):
        yield _bad(path, f"{path} is neither a run directory nor a .tar.gz audit bundle")
        return
    with tempfile.TemporaryDirectory(prefix="tenure-bundle-") as tmp:
        try:
            top = _unpack(path, Path(tmp))
        except (tarfile.TarError, LedgerReadError, OSError, EOFError) as exc:
            yield _bad(path, f"{path}: not a readable .tar.gz ({exc})")
            return
        if top is None:
            yield _bad(
                path,
                f"{path}: a bundle holds one folder of at most {MAX_BUNDLE_FILES} regular files",
            )
            return
        bundle = _load(Path(tmp) / top)
        yield bundle


def write_bundle(
    run_dir: Path,
    out: Path,
    *,
    run_id: str,
    public_key: Any,
    witness: Path | None,
    summary: dict[str, Any],
) -> Path:
    """Write the bundle of ``run_dir`` to ``out`` (a new directory, or a ``.tar.gz``).

    ``public_key`` is the trusted Ed25519 public key, ``witness`` the witness copy (if
    any), ``summary`` the verification facts to record in the manifest. Raises
    ``FileExistsError`` if ``out`` exists and ``OSError`` on I/O errors.
    """
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    archive = out.name.endswith((".tar.gz", ".tgz"))
    with tempfile.TemporaryDirectory(prefix="tenure-export-", dir=out.parent) as tmp:
        stem = out.name.removesuffix(".tar.gz").removesuffix(".tgz")
        root = Path(tmp) / stem if archive else out
        (root / run_id).mkdir(parents=True)
        files: dict[str, str] = {}
        for name in _RUN_FILES:
            src = run_dir / name
            if src.is_file():
                shutil.copyfile(src, root / run_id / name)
                files[f"{run_id}/{name}"] = _file_digest(root / run_id / name)
        (root / PUBLIC_KEY_NAME).write_bytes(public_key_pem(public_key))
        files[PUBLIC_KEY_NAME] = _file_digest(root / PUBLIC_KEY_NAME)
        if witness is not None and witness.is_file():
            shutil.copyfile(witness, root / BUNDLE_WITNESS_NAME)
            files[BUNDLE_WITNESS_NAME] = _file_digest(root / BUNDLE_WITNESS_NAME)
        manifest = {
            "format": BUNDLE_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tenure": __version__,
            "runs": [{"run_id": run_id, "dir": run_id, **summary}],
            "files": files,
        }
        (root / BUNDLE_MANIFEST_NAME).write_bytes(
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        if archive:
            with tarfile.open(out, "w:gz") as tar:
                tar.add(root, arcname=stem)
    return out

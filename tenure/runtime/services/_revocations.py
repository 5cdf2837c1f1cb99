"""Revocation requests from outside the process: the kill switch any process can press.

``rt.revoke`` only reaches runs of the runtime it is called on. An operator (``tenure
revoke ID --reason R``), a supervisor or an incident script in another process drops a
request into ``<evidence_dir>/.revocations/``; every runtime writing evidence there reads
the folder on each watchdog pass (``watchdog_interval``, 0.25 s by default, sooner when it
is woken) and revokes the run or lease it holds exactly as ``rt.revoke`` would, recording
who asked and why.

The runtime depends only on :class:`RevocationSource`; :class:`FolderRevocations` is the
single-host default, and a shared backend (a database table, an etcd watch) can implement
the same two methods for runtimes on several hosts.

Invariants:

- A request can only take authority away, never grant it: the worst a forged request can
  do is stop a run (keep the folder writable only by those allowed to stop runs).
- A request whose target is not live here is left in place (another runtime sharing the
  folder may hold it) and read only once per version of the file.
- A malformed request (not JSON, no valid ``target``) is logged once, naming the file, and
  left alone: it cannot say what to stop. A folder that exists but cannot be read is a
  fault: the caller stops its runs (fail closed), because a kill request may be in it.
- An applied request is deleted; the ledger's ``lease.revoked`` record keeps it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...evidence._ledger import valid_run_id

__all__ = [
    "REQUEST_SUFFIX",
    "REVOCATIONS_DIR",
    "FolderRevocations",
    "RevocationRequest",
    "RevocationSource",
    "write_request",
]

REVOCATIONS_DIR = ".revocations"
REQUEST_SUFFIX = ".revoke.json"
_MAX_TEXT = 500

_log = logging.getLogger("tenure.revocations")


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """One request to revoke ``target`` (a run id or a lease id)."""

    target: str
    reason: str
    by: str
    key: str  # how the source names it (the file name for a folder)


class RevocationSource(Protocol):
    """Where a runtime finds revocation requests made outside its process."""

    def poll(self) -> list[RevocationRequest]:
        """The requests not yet applied. Raises ``OSError`` if the source cannot be read."""
        ...

    def done(self, request: RevocationRequest) -> None:
        """``request`` was applied (recorded in the run's ledger): drop it."""
        ...


def _valid_target(target: object) -> bool:
    # Run and lease ids share the run-id alphabet (lease ids are hex).
    return isinstance(target, str) and valid_run_id(target)


def write_request(folder: Path, target: str, reason: str, by: str) -> Path:
    """Create the request file for ``target`` atomically (temp file, rename).

    Raises ``ValueError`` for a target that is not a run or lease id, ``OSError`` if the
    folder cannot be written.
    """
    if not _valid_target(target):
        raise ValueError(f"{target!r} is not a run or lease id ([A-Za-z0-9._-], 1-128 chars)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target}{REQUEST_SUFFIX}"
    tmp = folder / f".{target}.{os.getpid()}.tmp"
    body = {"target": target, "reason": reason[:_MAX_TEXT], "by": by[:_MAX_TEXT]}
    tmp.write_text(json.dumps(body, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class FolderRevocations:
    """Requests as files in one folder (the default :class:`RevocationSource`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # name -> (mtime_ns, the parsed request or None if malformed): each version once
        self._read: dict[str, tuple[int, RevocationRequest | None]] = {}

    def poll(self) -> list[RevocationRequest]:
        """Every well-formed request in the folder (an absent folder holds none)."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        found: list[RevocationRequest] = []
        names: set[str] = set()
        for entry in entries:
            name = entry.name
            if not name.endswith(REQUEST_SUFFIX) or name.startswith("."):
                continue
            try:
                mtime = entry.stat().st_mtime_ns
            except FileNotFoundError:  # applied by another runtime meanwhile
                continue
            names.add(name)
            cached = self._read.get(name)
            if cached is None or cached[0] != mtime:
                cached = (mtime, self._parse(Path(entry.path)))
                self._read[name] = cached
            if cached[1] is not None:
                found.append(cached[1])
        for gone in set(self._read) - names:
            del self._read[gone]
        return found

    def _parse(self, path: Path) -> RevocationRequest | None:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log.warning("ignoring revocation request %s: not readable JSON (%s)", path, exc)
            return None
        target = body.get("target") if isinstance(body, dict) else None
        if not _valid_target(target):
            _log.warning(
                "ignoring revocation request %s: 'target' must be a run or lease id, got %r",
                path,
                target,
            )
            return None
        assert isinstance(target, str) and isinstance(body, dict)
        reason, by = body.get("reason"), body.get("by")
        return RevocationRequest(
            target=target,
            reason=reason[:_MAX_TEXT] if isinstance(reason, str) and reason else "revoked",
            by=by[:_MAX_TEXT] if isinstance(by, str) and by else "unknown",
            key=path.name,
        )

    def done(self, request: RevocationRequest) -> None:
        """Delete the applied request's file (already gone is fine)."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / request.key).unlink()
        self._read.pop(request.key, None)

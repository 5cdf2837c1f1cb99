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
- Only small regular files are read: each is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a
  symlink is refused without following it, a FIFO does not block the open), checked with
  ``fstat`` to be a regular file of at most :data:`MAX_REQUEST_BYTES`, and read with that
  bound; JSON nested more than one level deep is refused before anything recurses. So a
  FIFO, a symlink to ``/dev/zero``, a huge or a deeply nested file can neither hang the
  watchdog nor exhaust memory nor crash it.
- A malformed request (one of the above, not JSON, no valid ``target``) is logged once per
  version of the file, naming it, and left alone: it cannot say what to stop. Nothing in a
  request file can raise out of :meth:`FolderRevocations.poll`. A folder that exists but
  cannot be listed is a fault: the caller stops its runs (fail closed), because a kill
  request may be in it.
- An applied request is deleted; the ledger's ``lease.revoked`` record keeps it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import orjson

from ..._files import read_regular_file
from ..._util import final
from ...evidence._format import REVOCATIONS_DIR, valid_run_id

__all__ = [
    "MAX_REQUEST_BYTES",
    "REQUEST_SUFFIX",
    "REVOCATIONS_DIR",
    "FolderRevocations",
    "RevocationRequest",
    "RevocationSource",
    "write_request",
]

REQUEST_SUFFIX = ".revoke.json"
#: The largest request file read (a request is three short strings).
MAX_REQUEST_BYTES: Final = 4096
_MAX_TEXT = 500

_log = logging.getLogger("tenure.revocations")


@final
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


@final
class FolderRevocations:
    """Requests as files in one folder (the default :class:`RevocationSource`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # name -> ((mtime_ns, size, inode), the request or None if malformed): each version
        # of a file is read (and a malformed one logged) once
        self._read: dict[str, tuple[tuple[int, int, int], RevocationRequest | None]] = {}

    def poll(self) -> list[RevocationRequest]:
        """Every well-formed request in the folder (an absent folder holds none).

        Raises ``OSError`` only when the folder itself cannot be listed.
        """
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
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # applied by another runtime meanwhile
                continue
            except OSError as exc:
                problem: str | None = f"cannot be stat'ed ({exc.strerror or exc})"
                mode, version = 0, (0, 0, 0)
            else:
                problem, mode = None, st.st_mode
                version = (st.st_mtime_ns, st.st_size, st.st_ino)
            names.add(name)
            cached = self._read.get(name)
            if cached is None or cached[0] != version:
                path = Path(entry.path)
                request = None
                if problem is None:
                    request, problem = _read_request(path, mode)
                if problem is not None:
                    _log.warning("ignoring revocation request %s: %s", path, problem)
                cached = (version, request)
                self._read[name] = cached
            if cached[1] is not None:
                found.append(cached[1])
        for gone in set(self._read) - names:
            del self._read[gone]
        return found

    def done(self, request: RevocationRequest) -> None:
        """Delete the applied request's file (already gone is fine)."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / request.key).unlink()
        self._read.pop(request.key, None)


def _read_request(path: Path, mode: int) -> tuple[RevocationRequest | None, str | None]:
    """``(request, None)`` or ``(None, why it is ignored)``; never raises."""
    if not stat.S_ISREG(mode):
        return None, "not a regular file (symlinks, FIFOs and devices are never opened)"
    try:
        data = read_regular_file(path, MAX_REQUEST_BYTES, "a request")
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, str(exc)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return None, f"not readable JSON ({exc})"
    if not isinstance(body, dict) or any(isinstance(v, dict | list) for v in body.values()):
        return None, "expected one JSON object of strings (target, reason, by)"
    target = body.get("target")
    if not _valid_target(target):
        return None, f"'target' must be a run or lease id, got {_short(target)}"
    assert isinstance(target, str)
    reason, by = body.get("reason"), body.get("by")
    return (
        RevocationRequest(
            target=target,
            reason=reason[:_MAX_TEXT] if isinstance(reason, str) and reason else "revoked",
            by=by[:_MAX_TEXT] if isinstance(by, str) and by else "unknown",
            key=path.name,
        ),
        None,
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

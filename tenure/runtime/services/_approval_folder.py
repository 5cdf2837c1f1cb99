"""Approvals answered from another process on the same host, through the evidence folder.

Like the kill switch (``.revocations``), a runtime writing evidence under ``DIR`` shows each
waiting request as ``DIR/.approvals/<request id>.request.json`` (the request as JSON: the
action, the target, the arguments rendered for a person, their digest, the action digest,
the rule, the accepted approvers) and removes it when the request is answered or gone.
``tenure approvals approve ID --key KEY --evidence-dir DIR`` signs a grant with the
approver's key over the request's action digest and drops it as ``<request id>.grant.json``;
the waiting runtime picks it up within a poll interval, verifies it like any grant (a
declared approver key, this request, this action) and deletes it.

The folder proves nothing by itself: a grant written there counts only if its signature
does, and a request shown there is believed only as far as its digests go
(:func:`~tenure.runtime.services._approval_request.check_request`: code that can write the folder
could otherwise show a harmless rendering of a harmful call). Files are read as
:func:`~tenure._files.read_regular_file` reads them (no symlinks, no FIFOs,
bounded); a malformed or refused grant is logged and deleted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from ..._files import read_regular_file
from ...evidence._format import valid_run_id
from ._files import write_atomically

__all__ = [
    "APPROVALS_DIR",
    "GRANT_SUFFIX",
    "REQUEST_SUFFIX",
    "ApprovalFolder",
    "read_requests",
    "write_grant",
]

APPROVALS_DIR: Final = ".approvals"
REQUEST_SUFFIX: Final = ".request.json"
GRANT_SUFFIX: Final = ".grant.json"
MAX_FILE_BYTES: Final = 64 * 1024

_log = logging.getLogger("tenure.approvals")


def _name_ok(request_id: str) -> bool:
    return request_id.startswith("apr_") and valid_run_id(request_id)


class ApprovalFolder:
    """One runtime's view of ``<evidence_dir>/.approvals``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def publish(self, request: Mapping[str, Any]) -> None:
        """Show a waiting request (best effort: answering in-process still works)."""
        try:
            path = self.folder / f"{request['id']}{REQUEST_SUFFIX}"
            write_atomically(path, orjson.dumps(dict(request), option=orjson.OPT_INDENT_2))
        except OSError as exc:
            _log.warning("cannot publish approval request %s: %s", request.get("id"), exc)

    def withdraw(self, request_id: str) -> None:
        """The request is answered or gone: remove its files."""
        for suffix in (REQUEST_SUFFIX, GRANT_SUFFIX):
            with contextlib.suppress(OSError):
                (self.folder / f"{request_id}{suffix}").unlink()

    def grant_for(self, request_id: str) -> object | None:
        """The grant dropped for ``request_id`` (parsed JSON, unverified), taken from the
        folder; ``None`` if there is none or it is unreadable (then it is logged and removed)."""
        path = self.folder / f"{request_id}{GRANT_SUFFIX}"
        try:
            data = read_regular_file(path, MAX_FILE_BYTES, "a grant")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log.warning("ignoring approval grant %s: %s", path, exc)
            self._remove(path)
            return None
        self._remove(path)
        try:
            grant: object = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            _log.warning("ignoring approval grant %s: not JSON (%s)", path, exc)
            return None
        return grant

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


def read_requests(folder: Path) -> list[dict[str, Any]]:
    """Every waiting request shown in ``folder`` (oldest first; unreadable ones skipped)."""
    out = []
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if not path.name.endswith(REQUEST_SUFFIX) or path.name.startswith("."):
            continue
        try:
            body = orjson.loads(read_regular_file(path, MAX_FILE_BYTES, "a request"))
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            out.append(body)
    out.sort(key=_requested_at)
    return out


def _requested_at(request: dict[str, Any]) -> int:
    # A file's word only orders the listing; one that lies about its type sorts first.
    at = request.get("requested_at_us")
    return at if type(at) is int else 0


def write_grant(folder: Path, request_id: str, envelope: Mapping[str, Any]) -> Path:
    """Drop a signed grant for ``request_id`` (``ValueError`` for an id that is not one)."""
    if not _name_ok(request_id):
        raise ValueError(f"{request_id!r} is not an approval request id (apr_...)")
    path = folder / f"{request_id}{GRANT_SUFFIX}"
    write_atomically(path, orjson.dumps(dict(envelope)))
    return path

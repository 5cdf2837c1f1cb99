"""The one ledger reader: bounded, streaming, with one torn-tail rule for every consumer.

The verifier, ``tenure trace``, the report, ``tenure runs``, proofs and export all read
evidence through this module. Evidence is untrusted input (it may come from anyone), so:

- **Files are opened without blocking and must be regular files**: a FIFO, a device
  (``/dev/zero``), a socket or a directory is refused before a byte is read
  (:func:`open_evidence`).
- **Every read is bounded before parsing**: a ledger line may hold at most
  :data:`MAX_RECORD_BYTES`; small files (checkpoints, keys, the attestation) at most their
  own limit; JSON nesting deeper than :data:`MAX_JSON_DEPTH` is refused before the parser
  sees it. Memory for one record is bounded whatever the file holds (a sparse 100 GB file is
  refused at its first line).
- **One torn-tail rule**: the final line of the file, when it lacks its ``\\n`` or does not
  parse, is a *torn tail* (a write cut short by a crash). It is reported
  (:attr:`LedgerReader.torn`), never returned as a record. Any other line that does not
  parse, is not a JSON object, or has a declared field of the wrong type is malformed
  evidence: :class:`LedgerReadError` names the file, the line (1-based) and the field.
- Records are checked against :mod:`._format` (``kind`` a string, every declared field of
  its declared type); the reader checks no hash, chain or signature: that is the verifier's
  work.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from .._errors import EvidenceError
from .._files import NotRegular, open_regular
from ._format import field_problem

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_RECORD_BYTES",
    "MAX_SMALL_FILE_BYTES",
    "LedgerReadError",
    "LedgerReader",
    "TornTail",
    "loads_bounded",
    "open_evidence",
    "read_evidence_file",
]

#: The longest ledger line accepted (an attestation envelope is the largest real record).
MAX_RECORD_BYTES: Final = 8 << 20
#: The deepest JSON nesting accepted anywhere in evidence (real records nest 4 levels).
MAX_JSON_DEPTH: Final = 32
#: Checkpoint notes, witness copies and public keys are a few hundred bytes.
MAX_SMALL_FILE_BYTES: Final = 64 << 10

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


class LedgerReadError(EvidenceError):
    """Evidence that cannot be read as Tenure evidence: file, line, field and reason.

    ``line`` is 1-based (0 when the problem is the file itself); ``str()`` is one line:
    ``<file>:<line>: field '<field>': <reason>``.
    """

    def __init__(self, path: Path, line: int, reason: str, field_name: str = "") -> None:
        self.path = path
        self.line = line
        self.field = field_name
        self.reason = reason
        where = f"{path}:{line}" if line else f"{path}"
        if field_name:
            where += f": field {field_name!r}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class TornTail:
    """The final line that was not accepted: its 1-based line number, size and why."""

    line: int
    size: int
    why: str


def open_evidence(path: Path) -> int:
    """Open ``path`` read-only without blocking; refuse anything but a regular file.

    Returns the file descriptor (blocking mode restored). Raises :class:`LedgerReadError`
    for a FIFO, device, socket or directory and ``OSError`` when the file cannot be opened.
    """
    try:
        return open_regular(path)
    except NotRegular as exc:
        raise LedgerReadError(path, 0, f"not a regular file ({exc.kind})") from None


def read_evidence_file(path: Path, limit: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """The bytes of a small evidence file, at most ``limit`` of them (else refused)."""
    fd = open_evidence(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise LedgerReadError(path, 0, f"larger than the {limit} bytes such a file may hold")
    return data


def _too_deep(data: bytes) -> bool:
    # Cheap test first: real records hold a handful of brackets.
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for m in _BRACKETS.finditer(_STRINGS.sub(b"", data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def loads_bounded(data: bytes | str) -> Any:
    """Parse JSON from untrusted evidence; ``ValueError`` if it is invalid or too deep."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if _too_deep(raw):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return orjson.loads(raw)


class LedgerReader:
    """Iterate over the records of a ledger file: ``(index, line bytes, record)``.

    ``index`` is 0-based (the record's position, which its ``i`` must equal); ``line``
    excludes the ``\\n`` (the bytes a leaf hash covers). After iteration, :attr:`torn`
    tells whether the final line was refused as a torn tail and :attr:`count` how many
    records were returned. With ``check_fields=False`` only the JSON shape and ``kind`` are
    checked (the verifier checks the fields of the kinds it reads itself, on its hot path).
    """

    def __init__(self, path: Path, *, check_fields: bool = True) -> None:
        self.path = Path(path)
        self.check_fields = check_fields
        self.torn: TornTail | None = None
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        path = self.path
        fd = open_evidence(path)
        with io.BufferedReader(io.FileIO(fd, "rb"), buffer_size=1 << 16) as f:
            readline = f.readline
            peek = f.peek
            loads = orjson.loads
            n = 0
            limit = MAX_RECORD_BYTES + 1
            while True:
                line = readline(limit)
                if not line:
                    break
                if line[-1:] != b"\n":
                    if len(line) >= limit:
                        raise LedgerReadError(
                            path, n + 1, f"record longer than {MAX_RECORD_BYTES} bytes"
                        )
                    self.torn = TornTail(n + 1, len(line), "has no final newline")
                    break
                body = line[:-1]
                try:
                    # The cheap count first (real records hold a handful of brackets).
                    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _too_deep(body):
                        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
                    rec = loads(body)
                except ValueError as exc:
                    if not peek(1):
                        self.torn = TornTail(n + 1, len(line), "does not parse")
                        break
                    raise LedgerReadError(path, n + 1, f"not a JSON record ({exc})") from None
                if type(rec) is not dict:
                    raise LedgerReadError(
                        path, n + 1, f"expected a JSON object, got {type(rec).__name__}"
                    )
                if type(rec.get("kind")) is not str:
                    raise LedgerReadError(path, n + 1, "missing or not a string", "kind")
                bad = field_problem(rec) if self.check_fields else None
                if bad is not None:
                    raise LedgerReadError(path, n + 1, f"expected {bad[1]}", bad[0])
                self.count = n + 1
                yield n, body, rec
                n += 1

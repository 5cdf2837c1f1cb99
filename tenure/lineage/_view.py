"""The lineage of a run rebuilt from its evidence ledger alone (``tenure trace RUN_DIR``).

This module reads ``ledger.jsonl`` (:func:`read_ledger`, :func:`load_trace`) and is the entry
point of the trace view: it re-exports the tree (:mod:`._tree`: :class:`TraceNode`,
:class:`RunTrace`, :func:`build_trace`) and its data renderings (:mod:`._render`: JSON tree,
Jaeger-UI JSON), so callers import everything from here.

Invariants:

- **This is a view, not a verifier.** Nothing here checks signatures or hashes; a reader is
  told to run ``tenure verify``. The ledger is still treated as untrusted input: a malformed
  record raises :class:`LedgerReadError` naming file, line and field, except a torn *last*
  line (a crash mid-append), which is skipped and reported as a warning.
- Every record handed to :func:`build_trace` is a JSON object with a string ``kind`` and
  integer ``t`` (microseconds); a ledger with no record at all is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._render import to_jaeger, trace_to_dict
from ._tree import RunTrace, TraceNode, build_trace

__all__ = [
    "LedgerReadError",
    "RunTrace",
    "TraceNode",
    "build_trace",
    "load_trace",
    "read_ledger",
    "to_jaeger",
    "trace_to_dict",
]

LEDGER_FILE = "ledger.jsonl"


class LedgerReadError(ValueError):
    """The ledger file cannot be read as Tenure evidence (file, line, field, reason)."""

    def __init__(self, path: Path, line: int, reason: str, field_name: str = "") -> None:
        self.path = path
        self.line = line
        self.field = field_name
        where = f"{path}:{line}" + (f" field {field_name!r}" if field_name else "")
        super().__init__(f"{where}: {reason}")


# --- reading -----------------------------------------------------------------------------


def read_ledger(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse ``ledger.jsonl``: records and warnings (a torn last line is skipped)."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn_tail = not raw.endswith(b"\n") and raw != b""
    if not torn_tail:
        lines = lines[:-1]
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    for n, line in enumerate(lines, start=1):
        last = n == len(lines)
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if last and torn_tail:
                warnings.append(f"line {n}: torn last record ignored (crash during append?)")
                break
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.reason
            raise LedgerReadError(path, n, f"not a JSON record ({why})") from exc
        if not isinstance(rec, dict):
            raise LedgerReadError(path, n, f"expected a JSON object, got {type(rec).__name__}")
        if not isinstance(rec.get("kind"), str):
            raise LedgerReadError(path, n, "expected a string", "kind")
        t = rec.get("t")
        if not isinstance(t, int) or isinstance(t, bool):
            raise LedgerReadError(path, n, f"expected integer microseconds, got {t!r}", "t")
        records.append(rec)
    if not records:
        raise LedgerReadError(path, 1, "the ledger holds no records")
    return records, warnings


def load_trace(run_dir: Path) -> RunTrace:
    """Read ``<run_dir>/ledger.jsonl`` (or a ledger file given directly) and build the tree."""
    path = run_dir / LEDGER_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(
            f"no ledger at {path} (expected a run directory holding {LEDGER_FILE})"
        )
    records, warnings = read_ledger(path)
    tr = build_trace(records)
    tr.warnings[:0] = warnings
    return tr

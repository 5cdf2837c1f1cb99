"""The lineage of a run rebuilt from its evidence ledger alone (``tenure trace RUN_DIR``).

This module reads ``ledger.jsonl`` through the one evidence reader
(:class:`tenure.evidence._reader.LedgerReader`: bounded reads, the same torn-tail rule as the
verifier) and is the entry point of the trace view: it re-exports the tree (:mod:`._tree`)
and its data renderings (:mod:`._render`: JSON tree, Jaeger-UI JSON; the terminal tree is
drawn by the CLI), so callers import everything from here.

Invariants:

- **This is a view, not a verifier.** Nothing here checks signatures or hashes; a reader is
  told to run ``tenure verify``. The ledger is still untrusted input: a malformed record
  raises :class:`LedgerReadError` naming file, line and field, except a torn *last* line (a
  crash mid-append), which is skipped and reported as a warning.
- Every record handed to :func:`build_trace` is a JSON object with a string ``kind``, an
  integer ``t`` (microseconds) and every declared field of its declared type; a ledger with
  no record at all is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evidence._format import LEDGER_NAME
from ..evidence._reader import LedgerReader, LedgerReadError
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


def read_ledger(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse ``ledger.jsonl``: records and warnings (a torn last line is skipped)."""
    reader = LedgerReader(path)
    records: list[dict[str, Any]] = []
    for _, _, rec in reader:
        if "t" not in rec:
            raise LedgerReadError(path, len(records) + 1, "missing integer microseconds", "t")
        records.append(rec)
    warnings: list[str] = []
    if reader.torn is not None:
        torn = reader.torn
        warnings.append(
            f"line {torn.line}: torn last record ignored ({torn.why}; crash during append?)"
        )
    if not records:
        raise LedgerReadError(path, 1, "the ledger holds no records")
    return records, warnings


def load_trace(run_dir: Path) -> RunTrace:
    """Read ``<run_dir>/ledger.jsonl`` (or a ledger file given directly) and build the tree."""
    path = run_dir / LEDGER_NAME if run_dir.is_dir() else run_dir
    if not path.exists():
        raise FileNotFoundError(
            f"no ledger at {path} (expected a run directory holding {LEDGER_NAME})"
        )
    records, warnings = read_ledger(path)
    tr = build_trace(records)
    tr.warnings[:0] = warnings
    return tr

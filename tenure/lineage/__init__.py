"""Lineage: OpenTelemetry spans of a live run, and the trace tree rebuilt from its evidence.

:mod:`._spans` emits the spans (GenAI semantic conventions plus ``tenure.*`` attributes);
:mod:`._view` reads a run's ledger into a :class:`RunTrace` that :mod:`._render` writes as a
JSON tree or Jaeger JSON (the terminal tree is drawn by the CLI). Nothing here imports the engine.
"""

from ._tree import BAD_STATUSES, RunTrace, TraceNode, build_trace
from ._view import LedgerReadError, load_trace, to_jaeger, trace_to_dict

__all__ = [
    "BAD_STATUSES",
    "LedgerReadError",
    "RunTrace",
    "TraceNode",
    "build_trace",
    "load_trace",
    "to_jaeger",
    "trace_to_dict",
]

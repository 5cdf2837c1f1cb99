"""Lineage: OpenTelemetry spans of a live run, and the trace tree rebuilt from its evidence.

:mod:`._spans` emits the spans (GenAI semantic conventions plus ``tenure.*`` attributes);
:mod:`._view` reads a run's ledger into a :class:`RunTrace` that :mod:`._render` prints as a
terminal tree or writes as Jaeger JSON. Nothing here imports the engine.
"""

from ._tree import RunTrace, TraceNode, build_trace
from ._view import LedgerReadError, load_trace, print_trace, render_tree, to_jaeger, trace_to_dict

__all__ = [
    "LedgerReadError",
    "RunTrace",
    "TraceNode",
    "build_trace",
    "load_trace",
    "print_trace",
    "render_tree",
    "to_jaeger",
    "trace_to_dict",
]

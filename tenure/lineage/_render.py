"""Rendering a :class:`RunTrace` as data: a JSON tree, or Jaeger-UI JSON.

(The terminal tree is the CLI's: :mod:`tenure.cli._tree`.)

Jaeger output is ``{"data": [{"traceID", "spans", "processes"}]}`` with the trace and span ids
of the records, loadable in the Jaeger UI ("Upload JSON") without a backend.

Invariants:

- Rendering never changes the tree it is given.
- A Jaeger trace or span id taken from the ledger is used only when it has the expected form
  (32 / 16 lowercase hex digits); otherwise a stable id is derived from the run id and step.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ._names import PROVIDER_NAME
from ._tree import BAD_STATUSES, RunTrace, TraceNode

__all__ = ["to_jaeger", "trace_to_dict"]

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_OP_OF_KIND = {
    "run": "invoke_workflow",
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "model": "chat",
}


# --- JSON --------------------------------------------------------------------------------


def _node_dict(node: TraceNode) -> dict[str, Any]:
    return {
        "kind": node.kind,
        "name": node.name,
        "step": node.step,
        "status": node.status,
        "lease": node.lease,
        "start_us": node.start_us,
        "end_us": node.end_us,
        "duration_us": node.duration_us,
        "trace_id": node.trace_id,
        "span_id": node.span_id,
        "decision": node.decision,
        "approval": node.approval,
        "error": node.error,
        "message": node.message,
        "started": node.started,
        "stopped_here": node.stopped_here,
        "framework": node.framework,
        "call": node.call,
        "usage": node.usage,
        "usage_model": node.usage_model,
        "events": node.events,
        "children": [_node_dict(c) for c in node.children],
    }


def trace_to_dict(tr: RunTrace) -> dict[str, Any]:
    """The tree as plain JSON-able data (``tenure trace --json``)."""
    return {
        "run_id": tr.run_id,
        "principal": tr.principal,
        "scopes": tr.scopes,
        "status": tr.status,
        "end": tr.end,
        "stop": {"path": tr.stop_path, "reason": tr.stop_reason},
        "records": tr.records,
        "warnings": tr.warnings,
        "usage": {**tr.usage, "model_calls": tr.model_calls},
        "tree": _node_dict(tr.root),
    }


# --- Jaeger ------------------------------------------------------------------------------


def _derived(seed: str, size: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:size]


def _tag(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    return {"key": key, "type": "string", "value": str(value)}


def _node_tags(tr: RunTrace, node: TraceNode) -> list[dict[str, Any]]:
    tags: list[tuple[str, object]] = [
        ("span.kind", "internal"),
        ("gen_ai.operation.name", _OP_OF_KIND[node.kind]),
        ("tenure.run.id", tr.run_id),
        ("tenure.principal", tr.principal),
    ]
    if node.kind == "run":
        tags.append(("gen_ai.workflow.name", node.name))
    elif node.kind == "agent":
        tags += [
            ("gen_ai.provider.name", PROVIDER_NAME),
            ("gen_ai.agent.name", node.name),
            ("gen_ai.agent.id", node.name),  # the ledger names agents, not their code paths
            ("tenure.step.id", node.step),
        ]
    else:
        tags += [
            ("gen_ai.tool.name", node.name),
            ("gen_ai.tool.call.id", node.step),
            ("gen_ai.tool.type", "function"),
        ]
    if node.lease:
        tags.append(("tenure.lease.id", node.lease))
    if node.decision:
        tags += [
            ("tenure.decision", node.decision["effect"]),
            ("tenure.rule.id", node.decision["rule"]),
        ]
    tags.append(("tenure.status", node.status))
    if node.status in BAD_STATUSES or (node.kind == "run" and node.status != "ok"):
        tags += [
            ("error", True),
            ("otel.status_code", "ERROR"),
            ("otel.status_description", node.message or node.status),
        ]
        if node.error:
            tags.append(("error.type", node.error))
    return [_tag(k, v) for k, v in tags]


def _logs(node: TraceNode) -> list[dict[str, Any]]:
    logs = []
    for ev in node.events:
        fields = [_tag("event", "tenure." + ev["kind"])]
        fields += [_tag(k, v) for k, v in ev.items() if k not in ("kind", "t") and v is not None]
        logs.append({"timestamp": ev["t"], "fields": fields})
    for child in node.children:
        if not child.started:  # denied / unapproved step: a decision log on the caller
            d = child.decision or {}
            logs.append(
                {
                    "timestamp": child.start_us,
                    "fields": [
                        _tag("event", "tenure.decision"),
                        _tag("target", child.name),
                        _tag("action", _OP_OF_KIND[child.kind]),
                        _tag("effect", d.get("effect", "")),
                        _tag("rule", d.get("rule", "")),
                        _tag("reason", d.get("reason", "")),
                        _tag("status", child.status),
                    ],
                }
            )
    return sorted(logs, key=lambda log: log["timestamp"] or 0)


def to_jaeger(tr: RunTrace) -> dict[str, Any]:
    """Jaeger-UI JSON (``{"data": [trace]}``) of the run, ids taken from the records."""
    default_trace = (
        tr.root.trace_id if _HEX32.match(tr.root.trace_id) else _derived("trace:" + tr.run_id, 32)
    )
    spans: list[dict[str, Any]] = []

    def ids(node: TraceNode) -> tuple[str, str]:
        t = node.trace_id if _HEX32.match(node.trace_id) else default_trace
        s = (
            node.span_id
            if _HEX16.match(node.span_id)
            else _derived(f"span:{tr.run_id}:{node.kind}:{node.step}", 16)
        )
        return t, s

    def visit(node: TraceNode, parent: tuple[str, str] | None) -> None:
        trace_id, span_id = ids(node)
        start = node.start_us or 0
        spans.append(
            {
                "traceID": trace_id,
                "spanID": span_id,
                "flags": 1,
                "operationName": f"{_OP_OF_KIND[node.kind]} {node.name}",
                "references": []
                if parent is None
                else [{"refType": "CHILD_OF", "traceID": parent[0], "spanID": parent[1]}],
                "startTime": start,
                "duration": node.duration_us or 0,
                "tags": _node_tags(tr, node),
                "logs": _logs(node),
                "processID": "p1",
                "warnings": None,
            }
        )
        for child in node.children:
            if child.started:
                visit(child, (trace_id, span_id))

    visit(tr.root, None)
    process = {"serviceName": "tenure", "tags": [_tag("tenure.run.id", tr.run_id)]}
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["traceID"], []).append(span)
    return {
        "data": [
            {"traceID": t, "spans": s, "processes": {"p1": process}, "warnings": None}
            for t, s in by_trace.items()
        ]
    }

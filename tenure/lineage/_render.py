"""Rendering a :class:`RunTrace`: a rich tree, a JSON tree, or Jaeger-UI JSON.

Jaeger output is ``{"data": [{"traceID", "spans", "processes"}]}`` with the trace and span ids
of the records, loadable in the Jaeger UI ("Upload JSON") without a backend.

Invariants:

- **Untrusted text never reaches the terminal as markup or control codes**: every name and
  message is rendered as plain :class:`rich.text.Text`, from strings the tree builder already
  sanitised.
- Rendering never changes the tree it is given.
- A Jaeger trace or span id taken from the ledger is used only when it has the expected form
  (32 / 16 lowercase hex digits); otherwise a stable id is derived from the run id and step.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from ._tree import _BAD_STATUS, RunTrace, TraceNode

__all__ = ["print_trace", "render_tree", "to_jaeger", "trace_to_dict"]

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_OP_OF_KIND = {"run": "invoke_workflow", "agent": "invoke_agent", "tool": "execute_tool"}


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
        tags += [("gen_ai.agent.name", node.name), ("gen_ai.agent.id", node.step)]
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
    if node.status in _BAD_STATUS or (node.kind == "run" and node.status != "ok"):
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


# --- terminal ----------------------------------------------------------------------------


def _fmt_us(us: int | None) -> str:
    if us is None:
        return "?"
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


_STATUS_STYLE = {
    "ok": "green",
    "running": "yellow",
    "unfinished": "yellow",
    "not started": "yellow",
    "awaiting approval": "yellow",
}


def _label(tr: RunTrace, node: TraceNode) -> Text:
    status_style = _STATUS_STYLE.get(node.status, "bold red")
    text = Text()
    if node.kind == "run":
        text.append("run ", style="bold")
        text.append(tr.run_id or "?", style="bold")
        text.append(f"  workflow {node.name}  principal {tr.principal or '?'}", style="dim")
    else:
        text.append(f"{node.kind} ", style="cyan" if node.kind == "agent" else "magenta")
        text.append(node.name, style="bold")
    text.append("  ")
    text.append(node.status, style=status_style)
    if node.started:
        text.append(f"  {_fmt_us(node.duration_us)}", style="dim")
    if node.decision:
        effect, rule = node.decision["effect"], node.decision["rule"]
        text.append(f"  {effect} by {rule}", style="red" if effect == "deny" else "dim")
        if effect == "deny" and node.decision["reason"]:
            text.append(f": {node.decision['reason']}", style="red")
    if node.approval:
        a = node.approval
        text.append(
            f"  approval {a['status']} by {a['approver']}",
            style="dim" if a["status"] == "granted" else "red",
        )
    if node.error and node.kind != "run":
        text.append(f"  {node.error}", style="red")
        if node.message:
            text.append(f": {node.message}", style="red")
    if node.stopped_here:
        text.append("  ◀ stopped here", style="bold red")
    return text


def _event_text(ev: dict[str, Any]) -> Text | None:
    kind = ev["kind"]
    if kind == "violation":
        return Text(
            f"✖ violation {ev['error']} (check={ev['check']}, source={ev['source']}): "
            f"{ev['reason']}",
            style="bold red",
        )
    if kind == "lease.revoked":
        extra = f" (+{ev['cascade']} cascaded)" if ev["cascade"] not in ("", "0") else ""
        return Text(
            f"⚠ lease {ev['lease']} revoked by {ev['by']}: {ev['reason']}{extra}", style="red"
        )
    if kind == "stall":
        return Text(f"⚠ event loop stalled {ev['duration_ms']} ms in {ev['frame']}", style="yellow")
    if kind == "isolation.stall":
        return Text(
            f"⚠ isolated process {ev['pid']} stalled {ev['duration_ms']} ms in {ev['frame']}",
            style="yellow",
        )
    if kind == "isolation.killed":
        return Text(f"✖ isolated process {ev['pid']} killed: {ev['reason']}", style="red")
    if kind == "approval.requested":
        return Text(f"approval requested ({ev['request']}, rule {ev['rule']})", style="dim")
    return None  # renewals are counted, not listed


def _add(tr: RunTrace, branch: Tree, node: TraceNode) -> None:
    """Events and children of ``node`` in time order (events first on a tie)."""
    items: list[tuple[int, int, Text | TraceNode]] = []
    for ev in node.events:
        text = _event_text(ev)
        if text is not None:
            items.append((ev["t"], 0, text))
    items += [(child.start_us or 0, 1, child) for child in node.children]
    items.sort(key=lambda item: (item[0], item[1]))
    for _, _, item in items:
        if isinstance(item, Text):
            branch.add(item)
        else:
            _add(tr, branch.add(_label(tr, item)), item)
    renewals = sum(1 for ev in node.events if ev["kind"] == "lease.renewed")
    if renewals:
        branch.add(Text(f"lease renewed {renewals}×", style="dim"))


def render_tree(tr: RunTrace) -> Tree:
    """The run as a rich :class:`~rich.tree.Tree`."""
    tree = Tree(_label(tr, tr.root))
    _add(tr, tree, tr.root)
    return tree


def _summary(tr: RunTrace) -> Iterable[Text]:
    if tr.status == "ok":
        yield Text(f"Ended: ok in {_fmt_us(tr.root.duration_us)}", style="green")
    elif tr.status == "unfinished":
        yield Text("Ended: no run.end record (crashed or still running)", style="yellow")
    else:
        yield Text(f"Ended: {tr.status} — {tr.stop_reason}", style="bold red")
    if tr.stop_path:
        yield Text("Stopped at: " + " › ".join(tr.stop_path), style="red")
    if tr.root.trace_id:
        yield Text(f"Trace id: {tr.root.trace_id}", style="dim")
    for w in tr.warnings:
        yield Text(f"warning: {w}", style="yellow")
    yield Text("(a view of the ledger; run `tenure verify` to check its integrity)", style="dim")


def print_trace(tr: RunTrace, console: Console) -> None:
    """Print the tree and a summary of how and why the run ended."""
    console.print(render_tree(tr))
    for line in _summary(tr):
        console.print(line)

"""The lineage of a run rebuilt from its evidence ledger alone (``tenure trace RUN_DIR``).

The tree comes from ``step.start`` / ``step.end`` records (``parent`` step ids); decisions,
approvals, violations, lease revocations, stalls and isolation kills are attached to the step
they concern; timings come from ``t`` (wall-clock µs); how and why the run ended from
``run.end`` and ``violation`` records. Output: a rich tree, a JSON tree, or Jaeger-UI JSON
(``{"data": [{"traceID", "spans", "processes"}]}``) with the trace and span ids of the
records, loadable in the Jaeger UI ("Upload JSON") without a backend.

Invariants:

- **This is a view, not a verifier.** Nothing here checks signatures or hashes; a reader is
  told to run ``tenure verify``. The ledger is still treated as untrusted input: a malformed
  record raises :class:`LedgerReadError` naming file, line and field, except a torn *last*
  line (a crash mid-append), which is skipped and reported as a warning.
- **Untrusted text never reaches the terminal as markup or control codes**: every name and
  message is sanitised and rendered as plain :class:`rich.text.Text`.
- Every started step appears exactly once, under its recorded parent (or under the run,
  with a warning, when that parent is unknown). A decision for a step that never started
  (a deny, an unanswered approval) becomes a leaf under the calling agent's open step.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

__all__ = [
    "LedgerReadError",
    "RunTrace",
    "TraceNode",
    "build_trace",
    "load_trace",
    "read_ledger",
    "render_tree",
    "to_jaeger",
    "trace_to_dict",
]

LEDGER_FILE = "ledger.jsonl"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_MAX_TEXT = 300
_KIND_OF_ACTION = {"invoke_agent": "agent", "execute_tool": "tool"}
_OP_OF_KIND = {"run": "invoke_workflow", "agent": "invoke_agent", "tool": "execute_tool"}
_BAD_STATUS = {"error", "stopped", "abandoned", "unfinished", "denied", "approval denied"}


class LedgerReadError(ValueError):
    """The ledger file cannot be read as Tenure evidence (file, line, field, reason)."""

    def __init__(self, path: Path, line: int, reason: str, field_name: str = "") -> None:
        self.path = path
        self.line = line
        self.field = field_name
        where = f"{path}:{line}" + (f" field {field_name!r}" if field_name else "")
        super().__init__(f"{where}: {reason}")


def _clean(value: object) -> str:
    """Untrusted text -> one printable line, bounded."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _s(rec: dict[str, Any], key: str) -> str:
    v = rec.get(key, "")
    return _clean(v) if v is not None else ""


@dataclass
class TraceNode:
    """One node of the run tree: the run itself, an agent step or a tool step."""

    kind: str  # "run" | "agent" | "tool"
    name: str
    step: str = ""
    parent_step: str = ""
    lease: str = ""
    status: str = "unfinished"
    start_us: int | None = None
    end_us: int | None = None
    trace_id: str = ""
    span_id: str = ""
    decision: dict[str, str] | None = None
    approval: dict[str, str] | None = None
    error: str = ""
    message: str = ""
    started: bool = True
    stopped_here: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    children: list[TraceNode] = field(default_factory=list)

    @property
    def duration_us(self) -> int | None:
        """End minus start (µs), or ``None`` if either is unknown."""
        if self.start_us is None or self.end_us is None:
            return None
        return max(0, self.end_us - self.start_us)

    def walk(self) -> Iterator[TraceNode]:
        """This node and its descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class RunTrace:
    """A run as the ledger tells it."""

    run_id: str
    root: TraceNode
    principal: str = ""
    scopes: list[str] = field(default_factory=list)
    status: str = "unfinished"  # run.end status, or "unfinished"
    end: dict[str, str] = field(default_factory=dict)
    stop_path: list[str] = field(default_factory=list)
    stop_reason: str = ""
    records: int = 0
    warnings: list[str] = field(default_factory=list)


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


# --- building ----------------------------------------------------------------------------


class _Builder:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.by_index = {r["i"]: r for r in records if isinstance(r.get("i"), int)}
        start = next((r for r in records if r["kind"] == "run.start"), None)
        self.warnings: list[str] = []
        if start is None:
            self.warnings.append("no run.start record: run details unknown")
            start = {"t": records[0]["t"]}
        self.run = TraceNode(
            kind="run",
            name=_s(start, "agent") or "?",
            start_us=start["t"],
            trace_id=_s(start, "trace"),
            span_id=_s(start, "span"),
            status="unfinished",
        )
        self.trace = RunTrace(
            run_id=_s(start, "run"),
            root=self.run,
            principal=_s(start, "principal"),
            scopes=[_clean(s) for s in start.get("scopes", []) if isinstance(s, str)],
            records=len(records),
        )
        self.steps: dict[str, TraceNode] = {}
        self.by_span: dict[str, TraceNode] = {}
        if self.run.span_id:
            self.by_span[self.run.span_id] = self.run
        self.started_ids = {r.get("step") for r in records if r["kind"] == "step.start"}
        self.open: list[TraceNode] = []
        self.pending: dict[str, list[dict[str, Any]]] = {}  # events before their step.start
        self.first_violation: TraceNode | None = None

    # helpers
    def _node_for_lease(self, lease: str) -> TraceNode | None:
        hits = [n for n in self.open if n.lease == lease] or [
            n for n in self.steps.values() if n.lease == lease
        ]
        return hits[-1] if hits else None

    def _decided_node(self, rec: dict[str, Any]) -> TraceNode:
        """The node of a decision whose step never started (created on first sight)."""
        step = _s(rec, "step")
        node = self.steps.get(step)
        if node is not None:
            return node
        kind = _KIND_OF_ACTION.get(_s(rec, "action"), "agent")
        node = TraceNode(
            kind=kind,
            name=_s(rec, "target"),
            step=step,
            lease=_s(rec, "lease"),
            status="not started",
            started=False,
            start_us=rec["t"],
            trace_id=_s(rec, "trace"),
            span_id="",
        )
        # The runtime records a decision on the caller's span: that names the parent exactly.
        parent = self.by_span.get(_s(rec, "span"))
        if parent is None:
            caller = _s(rec, "caller")
            parents = [n for n in self.open if n.kind == "agent" and n.name == caller]
            preferred = [n for n in parents if n.lease == node.lease] or parents
            parent = preferred[-1] if caller and preferred else self.run
        node.parent_step = parent.step
        parent.children.append(node)
        self.steps[step] = node
        return node

    def _event(self, node: TraceNode, rec: dict[str, Any], **fields: str) -> None:
        node.events.append({"kind": rec["kind"], "t": rec["t"], "i": rec.get("i"), **fields})

    # dispatch
    def build(self) -> RunTrace:
        for rec in self.records:
            handler = getattr(self, "_on_" + rec["kind"].replace(".", "_"), None)
            if handler is not None:
                handler(rec)
        last_t = self.records[-1]["t"]
        for node in self.run.walk():
            if node.started and node.end_us is None and node is not self.run:
                node.end_us = self.run.end_us if self.run.end_us is not None else last_t
        if self.run.end_us is None:
            self.run.end_us = last_t
            self.warnings.append("no run.end record: the run crashed or is still running")
        self._stop_info()
        self.trace.warnings.extend(self.warnings)
        return self.trace

    def _on_step_start(self, rec: dict[str, Any]) -> None:
        step = _s(rec, "step")
        node = self.steps.get(step)
        if node is not None and node.started:
            self.warnings.append(f"record {rec.get('i')}: step {step!r} started twice; ignored")
            return
        kind = _KIND_OF_ACTION.get(_s(rec, "action"), "agent")
        node = TraceNode(
            kind=kind,
            name=_s(rec, "target"),
            step=step,
            lease=_s(rec, "lease"),
            parent_step=_s(rec, "parent"),
            start_us=rec["t"],
            status="running",
            trace_id=_s(rec, "trace"),
            span_id=_s(rec, "span"),
        )
        dec = self.by_index.get(rec.get("decision"))
        if dec is not None and dec.get("kind") == "decision":
            node.decision = {k: _s(dec, k) for k in ("effect", "rule", "reason")}
        appr = self.by_index.get(rec.get("approval"))
        if appr is not None and appr.get("kind") == "approval.granted":
            node.approval = {
                "status": "granted",
                "approver": _s(appr, "approver"),
                "reason": _s(appr, "reason"),
            }
        parent = self.steps.get(node.parent_step) if node.parent_step else self.run
        if parent is None:
            self.warnings.append(
                f"record {rec.get('i')}: step {step!r} names unknown parent "
                f"{node.parent_step!r}; shown under the run"
            )
            parent = self.run
        node.events.extend(self.pending.pop(step, []))
        if node.span_id:
            self.by_span.setdefault(node.span_id, node)
        parent.children.append(node)
        self.steps[step] = node
        self.open.append(node)

    def _on_step_end(self, rec: dict[str, Any]) -> None:
        node = self.steps.get(_s(rec, "step"))
        if node is None or not node.started:
            self.warnings.append(f"record {rec.get('i')}: step.end for unknown step")
            return
        node.end_us = rec["t"]
        node.status = _s(rec, "status") or "ok"
        node.error = _s(rec, "error")
        node.message = _s(rec, "message")
        if node in self.open:
            self.open.remove(node)

    def _on_decision(self, rec: dict[str, Any]) -> None:
        if rec.get("step") in self.started_ids:
            return  # shown through the step.start that references it
        node = self._decided_node(rec)
        node.decision = {k: _s(rec, k) for k in ("effect", "rule", "reason")}
        if node.decision["effect"] == "deny":
            node.status = "denied"
        elif node.decision["effect"] == "require_approval":
            node.status = "awaiting approval"

    def _on_approval_requested(self, rec: dict[str, Any]) -> None:
        step = _s(rec, "step")
        event = {
            "kind": rec["kind"],
            "t": rec["t"],
            "i": rec.get("i"),
            "request": _s(rec, "request"),
            "rule": _s(rec, "rule"),
        }
        node = self.steps.get(step)
        if node is not None:
            node.events.append(event)
        elif step in self.started_ids:
            self.pending.setdefault(step, []).append(event)

    def _on_approval_granted(self, rec: dict[str, Any]) -> None:
        self._approval(rec, "granted")

    def _on_approval_denied(self, rec: dict[str, Any]) -> None:
        self._approval(rec, "denied")

    def _approval(self, rec: dict[str, Any], status: str) -> None:
        node = self.steps.get(_s(rec, "step"))
        if node is None:
            return
        node.approval = {
            "status": status,
            "approver": _s(rec, "approver"),
            "reason": _s(rec, "reason"),
        }
        if status == "denied" and not node.started:
            node.status = "approval denied"
        elif not node.started:
            node.status = "not started"

    def _on_violation(self, rec: dict[str, Any]) -> None:
        task, lease = _s(rec, "task"), _s(rec, "lease")
        kind, _, name = task.partition(":")
        named = [n for n in self.steps.values() if n.kind == kind and n.name == name]
        # a running step of that name, else a step refused before it started, else any
        candidates = (
            [n for n in self.open if n in named] or [n for n in named if not n.started] or named
        )
        candidates = [n for n in candidates if n.lease == lease] or candidates
        node = (
            candidates[-1]
            if candidates
            else (self._node_for_lease(lease) if lease else None) or self.run
        )
        self._event(
            node,
            rec,
            error=_s(rec, "error"),
            check=_s(rec, "check"),
            reason=_s(rec, "reason"),
            source=_s(rec, "source"),
            task=task,
        )
        if self.first_violation is None:
            self.first_violation = node
            node.stopped_here = True

    def _on_lease_revoked(self, rec: dict[str, Any]) -> None:
        node = self._node_for_lease(_s(rec, "lease")) or self.run
        cascade = rec.get("cascade")
        self._event(
            node,
            rec,
            lease=_s(rec, "lease"),
            reason=_s(rec, "reason"),
            by=_s(rec, "by"),
            cascade=str(len(cascade) if isinstance(cascade, list) else 0),
        )

    def _on_lease_renewed(self, rec: dict[str, Any]) -> None:
        node = self._node_for_lease(_s(rec, "lease"))
        if node is not None:
            self._event(node, rec, lease=_s(rec, "lease"))

    def _on_stall(self, rec: dict[str, Any]) -> None:
        self._event(self.run, rec, duration_ms=_s(rec, "duration_ms"), frame=_s(rec, "frame"))

    def _on_isolation_killed(self, rec: dict[str, Any]) -> None:
        node = self.steps.get(_s(rec, "step")) or self.run
        self._event(node, rec, pid=_s(rec, "pid"), reason=_s(rec, "reason"))

    def _on_run_end(self, rec: dict[str, Any]) -> None:
        self.run.end_us = rec["t"]
        status = _s(rec, "status") or "ok"
        self.run.status = status
        self.run.error = _s(rec, "error")
        self.run.message = _s(rec, "reason")
        self.trace.status = status
        self.trace.end = {k: _s(rec, k) for k in ("status", "error", "check", "reason")}

    def _stop_info(self) -> None:
        where = self.first_violation
        if where is None and self.trace.status != "ok":
            bad = [n for n in self.run.walk() if n.status in _BAD_STATUS and n is not self.run]
            if bad:
                where = min(bad, key=lambda n: (n.end_us or 0, -len(self._path(n))))
                where.stopped_here = True
        if where is not None and self.trace.status != "ok":
            self.trace.stop_path = self._path(where)
        if self.trace.status not in ("ok", "unfinished"):
            end = self.trace.end
            parts = [end.get("error", ""), f"check={end['check']}" if end.get("check") else ""]
            head = " ".join(p for p in parts if p)
            self.trace.stop_reason = f"{head}: {end.get('reason', '')}" if head else end["reason"]

    def _path(self, node: TraceNode) -> list[str]:
        path: list[str] = []
        cur: TraceNode | None = node
        while cur is not None and cur is not self.run:
            path.append(f"{cur.kind}:{cur.name}")
            cur = self.steps.get(cur.parent_step) if cur.parent_step else None
        path.append(f"run:{self.trace.run_id}")
        return path[::-1]


def build_trace(records: list[dict[str, Any]]) -> RunTrace:
    """Build the run tree from parsed ledger records (see :func:`read_ledger`)."""
    if not records:
        raise ValueError("build_trace needs at least one record")
    return _Builder(records).build()


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

"""The run tree rebuilt from parsed ledger records: :class:`TraceNode`, :class:`RunTrace`.

:func:`build_trace` turns the records :func:`~tenure.lineage._view.read_ledger` parsed
into a tree. The tree comes from ``step.start`` / ``step.end`` records (``parent`` step ids);
decisions, approvals, violations, lease revocations, stalls and isolation kills are attached
to the step they concern; timings come from ``t`` (wall-clock µs); how and why the run ended
from ``run.end`` and ``violation`` records.

Invariants:

- Every started step appears exactly once, under its recorded parent (or under the run,
  with a warning, when that parent is unknown). A decision for a step that never started
  (a deny, an unanswered approval) becomes a leaf under the calling agent's open step.
- Every string copied from a record into the tree goes through
  :func:`~tenure._text.one_line`: one printable line of at most
  :data:`~tenure._text.MAX_LINE` characters, whatever the ledger holds.
- Nothing here checks signatures or hashes: this is a view, not a verifier.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._text import one_line
from .._util import final
from ..evidence._batch import LeaseTree, leases_of
from ..evidence._format import (
    APPROVAL_GRANTED,
    DECISION,
    LEASE_RENEWED,
    RUN_START,
    STEP_START,
    carries_decision,
)

__all__ = ["RunTrace", "TraceNode", "build_trace"]

_KIND_OF_ACTION = {"invoke_agent": "agent", "execute_tool": "tool", "call_model": "model"}
_USAGE_COUNTS = ("tokens", "input_tokens", "output_tokens", "cost_micros")
#: Node statuses that mean the step did not end well (rendered as failures).
BAD_STATUSES = frozenset(
    {"error", "stopped", "abandoned", "unfinished", "denied", "approval denied"}
)


def _s(rec: dict[str, Any], key: str) -> str:
    v = rec.get(key, "")
    return one_line(v) if v is not None else ""


@final
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
    framework: str = ""  # the framework that made a foreign call ("mcp", "langgraph", ...)
    call: str = ""  # that framework's own id of the call
    usage: dict[str, int] | None = None  # a model call's (or a step's reported) usage
    usage_model: str = ""
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


@final
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
    #: the run's usage totals (``tokens``, ``input_tokens``, ``output_tokens``,
    #: ``cost_micros``) and how many model calls it made
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_USAGE_COUNTS, 0))
    model_calls: int = 0


# --- building ----------------------------------------------------------------------------


class _Builder:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.by_index = {r["i"]: r for r in records if isinstance(r.get("i"), int)}
        start = next((r for r in records if r["kind"] == RUN_START), None)
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
            scopes=[one_line(s) for s in start.get("scopes", []) if isinstance(s, str)],
            records=len(records),
        )
        self.steps: dict[str, TraceNode] = {}
        self.by_span: dict[str, TraceNode] = {}
        if self.run.span_id:
            self.by_span[self.run.span_id] = self.run
        self.started_ids = {r.get("step") for r in records if r["kind"] == STEP_START}
        self.open: list[TraceNode] = []
        self.pending: dict[str, list[dict[str, Any]]] = {}  # events before their step.start
        self.first_violation: TraceNode | None = None
        self.lease_tree = LeaseTree()  # which lease was issued under which

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
            framework=_s(rec, "framework"),
            call=_s(rec, "call"),
        )
        if kind == "model":
            self.trace.model_calls += 1
        dec = rec if carries_decision(rec) else self.by_index.get(rec.get("decision"))
        if dec is not None and (dec is rec or dec.get("kind") == DECISION):
            node.decision = {k: _s(dec, k) for k in ("effect", "rule", "reason")}
        appr = self.by_index.get(rec.get("approval"))
        if appr is not None and appr.get("kind") == APPROVAL_GRANTED:
            node.approval = {
                "status": "granted",
                "approver": _s(appr, "approver"),
                "approver_key": _s(appr, "approver_key"),
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
        self._end_step(
            rec.get("i"),
            _s(rec, "step"),
            rec["t"],
            _s(rec, "status") or "ok",
            _s(rec, "error"),
            _s(rec, "message"),
        )

    def _on_steps_stopped(self, rec: dict[str, Any]) -> None:
        steps, ended = rec.get("steps"), rec.get("ended")
        if not isinstance(steps, list) or not isinstance(ended, list) or len(steps) != len(ended):
            self.warnings.append(f"record {rec.get('i')}: malformed steps.stopped")
            return
        for step, t in zip(steps, ended, strict=True):
            self._end_step(
                rec.get("i"), str(step), t, "stopped", _s(rec, "error"), _s(rec, "message")
            )

    def _end_step(
        self, i: object, step: str, t: object, status: str, error: str, message: str
    ) -> None:
        node = self.steps.get(step)
        if node is None or not node.started:
            self.warnings.append(f"record {i}: end of unknown step {step!r}")
            return
        node.end_us = t if isinstance(t, int) else None
        node.status = status
        node.error = error
        node.message = message
        if node in self.open:
            self.open.remove(node)

    def _on_usage(self, rec: dict[str, Any]) -> None:
        counts = {k: rec.get(k, 0) for k in _USAGE_COUNTS}
        if not all(type(v) is int and v >= 0 for v in counts.values()):
            self.warnings.append(f"record {rec.get('i')}: usage with bad counts; not counted")
            return
        for k, v in counts.items():
            self.trace.usage[k] += v
        node = self.steps.get(_s(rec, "step"))
        if node is not None:
            mine = node.usage or dict.fromkeys(_USAGE_COUNTS, 0)
            node.usage = {k: mine[k] + counts[k] for k in _USAGE_COUNTS}
            node.usage_model = _s(rec, "model") or node.usage_model

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
            "approver_key": _s(rec, "approver_key"),
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

    def _on_lease_issued(self, rec: dict[str, Any]) -> None:
        self.lease_tree.note(rec)

    def _on_lease_revoked(self, rec: dict[str, Any]) -> None:
        lease = _s(rec, "lease")
        node = self._node_for_lease(lease) or self.run
        self._event(
            node,
            rec,
            lease=lease,
            reason=_s(rec, "reason"),
            by=_s(rec, "by"),
            cascade=str(self.lease_tree.revoked_with(rec)),
        )

    def _on_lease_renewed(self, rec: dict[str, Any]) -> None:
        node = self._node_for_lease(_s(rec, "lease"))
        if node is not None:
            self._event(node, rec, lease=_s(rec, "lease"))

    def _on_lease_batch(self, rec: dict[str, Any]) -> None:
        self.lease_tree.note(rec)
        if rec.get("purpose") != "renewed":
            return
        for claims in leases_of(rec):
            lid = claims.get("lid")
            if isinstance(lid, str) and (node := self._node_for_lease(lid)) is not None:
                node.events.append(
                    {"kind": LEASE_RENEWED, "t": rec["t"], "i": rec.get("i"), "lease": lid}
                )

    def _on_stall(self, rec: dict[str, Any]) -> None:
        self._event(self.run, rec, duration_ms=_s(rec, "duration_ms"), frame=_s(rec, "frame"))

    def _on_isolation_killed(self, rec: dict[str, Any]) -> None:
        node = self.steps.get(_s(rec, "step")) or self.run
        self._event(node, rec, pid=_s(rec, "pid"), reason=_s(rec, "reason"))

    def _on_isolation_stall(self, rec: dict[str, Any]) -> None:
        node = self.steps.get(_s(rec, "step")) or self.run
        raw = rec.get("frame")
        lines = raw.splitlines() if isinstance(raw, str) else []
        # The innermost frame of the worker's stack dump (cleaned for the terminal).
        frame = next((one_line(ln.strip()) for ln in lines if ln.strip().startswith("File ")), "")
        self._event(
            node, rec, pid=_s(rec, "pid"), duration_ms=_s(rec, "duration_ms"), frame=frame or "?"
        )

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
            bad = [n for n in self.run.walk() if n.status in BAD_STATUSES and n is not self.run]
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

"""``tenure report``: one self-contained HTML page a reviewer reads in a browser.

The page shows, for one run: the verification verdict computed when the report was made
(with the key trusted), who authorized the run (principal, scopes, ttl, policy and
attestation digests), a timeline of agents and tools (a Gantt view: one bar per step,
indented by depth, so parallel branches overlap visibly), every decision that was not a
plain allow (denials and approval holds) plus allow counts per rule, every approval with its
approver (and the approver's key id when the runtime recorded one) and reason, every
revocation with who asked and why, usage against the run's budgets, and where and why the
run stopped.

Invariants:

- **Self-contained**: no network, no external asset, no script; inline CSS only; a
  ``Content-Security-Policy`` meta tag forbids everything else, so even a bug in escaping
  could not load or run anything.
- **Every value from the evidence is escaped**: the template engine is Jinja2 with
  autoescaping on for the whole template; nothing is marked safe.
- **Large runs stay usable**: consecutive sibling steps with the same kind, name and status
  collapse into one timeline row (``search ×1,000``); the timeline shows at most
  :data:`MAX_TIMELINE_ROWS` rows and each table at most :data:`MAX_TABLE_ROWS` rows, each
  saying how many more there were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jinja2

from .._version import __version__
from ..evidence import LEDGER_NAME, VerifyReport, verify_run
from ..evidence._batch import LeaseTree
from ..evidence._format import (
    APPROVAL_DENIED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    DECISION,
    LEASE_BATCH,
    LEASE_ISSUED,
    LEASE_REVOKED,
    RUN_START,
    STEP_START,
    USAGE,
    VIOLATION,
    carries_decision,
)
from ._tree import RunTrace, TraceNode, build_trace
from ._view import read_ledger

__all__ = ["MAX_TABLE_ROWS", "MAX_TIMELINE_ROWS", "render_report", "write_report"]

MAX_TIMELINE_ROWS: Final = 2000
MAX_TABLE_ROWS: Final = 500
_TEMPLATE: Final = "report.html.j2"


@dataclass
class _Row:
    """One timeline row: a step, or a run of identical sibling steps collapsed into one."""

    kind: str
    name: str
    status: str
    depth: int
    start_us: int
    end_us: int
    count: int = 1
    rule: str = ""
    note: str = ""
    stopped_here: bool = False
    left: float = 0.0  # percent of the run's duration
    width: float = 0.0


@dataclass
class _Table:
    rows: list[dict[str, Any]] = field(default_factory=list)
    more: int = 0

    def add(self, row: dict[str, Any]) -> None:
        if len(self.rows) < MAX_TABLE_ROWS:
            self.rows.append(row)
        else:
            self.more += 1


def _timeline(tr: RunTrace) -> tuple[list[_Row], int]:
    rows: list[_Row] = []
    hidden = 0

    def visit(node: TraceNode, depth: int) -> None:
        nonlocal hidden
        prev: _Row | None = None
        for child in node.children:
            start = child.start_us or 0
            end = child.end_us if child.end_us is not None else start
            rule = (child.decision or {}).get("rule", "")
            if (
                prev is not None
                and not child.children
                and prev.kind == child.kind
                and prev.name == child.name
                and prev.status == child.status
                and prev.depth == depth
                and not child.stopped_here
            ):
                prev.count += 1
                prev.end_us = max(prev.end_us, end)
                continue
            row = _Row(
                child.kind,
                child.name,
                child.status,
                depth,
                start,
                end,
                rule=rule,
                note=child.message or child.error,
                stopped_here=child.stopped_here,
            )
            if len(rows) < MAX_TIMELINE_ROWS:
                rows.append(row)
            else:
                hidden += 1
            prev = row if not child.children else None
            visit(child, depth + 1)

    visit(tr.root, 0)
    return rows, hidden


def _digest_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The tables and totals the trace tree does not keep."""
    decisions = _Table()
    allowed: dict[tuple[str, str, str], int] = {}
    approvals = _Table()
    revocations = _Table()
    violations = _Table()
    requested: dict[str, dict[str, Any]] = {}
    tokens = cost_micros = steps = tools = 0
    depth = 0
    # (model, provider) -> calls, input tokens, output tokens, tokens, cost in micros
    models: dict[tuple[str, str], list[int]] = {}
    lineage = LeaseTree()
    for rec in records:
        kind = rec["kind"]
        if kind == DECISION:
            effect = rec.get("effect", "")
            if effect == "allow":
                key = (rec.get("action", ""), rec.get("target", ""), rec.get("rule", ""))
                allowed[key] = allowed.get(key, 0) + 1
            else:
                decisions.add(rec)
        elif kind == APPROVAL_REQUESTED:
            requested[str(rec.get("request", ""))] = rec
        elif kind in (APPROVAL_GRANTED, APPROVAL_DENIED):
            req = requested.get(str(rec.get("request", "")), {})
            approvals.add(
                {
                    **rec,
                    "decision": "granted" if kind == APPROVAL_GRANTED else "denied",
                    "target": req.get("target", ""),
                    "rule": req.get("rule", ""),
                }
            )
        elif kind == LEASE_REVOKED:
            revocations.add({**rec, "cascaded": lineage.revoked_with(rec)})
        elif kind in (LEASE_ISSUED, LEASE_BATCH):
            lineage.note(rec)
        elif kind == VIOLATION:
            violations.add(rec)
        elif kind == USAGE:
            tokens += rec.get("tokens", 0)
            cost_micros += rec.get("cost_micros", 0)
            # Usage recorded without a model (older ledgers, hand-counted usage) is one row.
            model_key = (str(rec.get("model", "")), str(rec.get("provider", "")))
            row = models.setdefault(model_key, [0, 0, 0, 0, 0])
            row[0] += 1
            row[1] += rec.get("input_tokens", 0)
            row[2] += rec.get("output_tokens", 0)
            row[3] += rec.get("tokens", 0)
            row[4] += rec.get("cost_micros", 0)
        elif kind == STEP_START:
            if carries_decision(rec):
                key = (rec.get("action", ""), rec.get("target", ""), rec.get("rule", ""))
                allowed[key] = allowed.get(key, 0) + 1
            steps += 1
            tools += rec.get("action") == "execute_tool"
            depth = max(depth, rec.get("depth", 0))
    allow_rows = [
        {"action": a, "target": t, "rule": r, "count": c}
        for (a, t, r), c in sorted(allowed.items(), key=lambda item: (-item[1], item[0]))
    ]
    model_rows = [
        {
            "model": model or "(no model named)",
            "provider": provider,
            "calls": n,
            "input_tokens": i,
            "output_tokens": o,
            "tokens": t,
            "cost": c / 1e6,
        }
        for (model, provider), (n, i, o, t, c) in sorted(
            models.items(), key=lambda item: (-item[1][4], -item[1][3], item[0])
        )
    ]
    return {
        "models": model_rows[:MAX_TABLE_ROWS],
        "decisions": decisions,
        "allowed": allow_rows[:MAX_TABLE_ROWS],
        "approvals": approvals,
        "revocations": revocations,
        "violations": violations,
        "usage": {
            "steps": steps,
            "tool_calls": tools,
            "depth": depth,
            "tokens": tokens,
            "cost": cost_micros / 1e6,
        },
    }


def _fmt_us(us: int | None) -> str:
    if us is None:
        return "?"
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tenure.lineage", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = _fmt_us
    env.filters["utc"] = lambda us: (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(us / 1e6))
        if isinstance(us, int)
        else "?"
    )
    return env


def render_report(run_dir: Path, report: VerifyReport | None = None) -> str:
    """The HTML report of ``run_dir`` (verified now unless ``report`` is given).

    Raises :class:`~tenure.evidence.LedgerReadError` when the ledger cannot be read.
    """
    rep = report if report is not None else verify_run(run_dir)
    records, read_warnings = read_ledger(run_dir / LEDGER_NAME)
    tr = build_trace(records)
    start = next((r for r in records if r["kind"] == RUN_START), {})
    rows, hidden = _timeline(tr)
    t0 = tr.root.start_us or 0
    span = max(1, (tr.root.end_us or t0) - t0)
    for row in rows:  # positions in percent of the run's duration
        row.left = round(100 * max(0, row.start_us - t0) / span, 3)
        row.width = max(0.2, round(100 * max(0, row.end_us - row.start_us) / span, 3))
    return (
        _environment()
        .get_template(_TEMPLATE)
        .render(
            rep=rep,
            tr=tr,
            start=start,
            budgets=start.get("budgets") if isinstance(start.get("budgets"), dict) else {},
            rows=rows,
            hidden=hidden,
            warnings=[*read_warnings, *tr.warnings],
            generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            version=__version__,
            **_digest_records(records),
        )
    )


def write_report(run_dir: Path, out: Path, report: VerifyReport | None = None) -> Path:
    """Render the report of ``run_dir`` into ``out``."""
    out.write_text(render_report(run_dir, report), encoding="utf-8")
    return out

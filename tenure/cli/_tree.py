"""The lineage of a run as a tree in the terminal (``tenure trace``, ``tenure demo``).

Invariants:

- **Untrusted text never reaches the terminal as markup or control codes**: every name and
  message is rendered as plain :class:`rich.text.Text`, from strings the tree builder already
  sanitised.
- Rendering never changes the tree it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from ..evidence._format import (
    APPROVAL_REQUESTED,
    ISOLATION_KILLED,
    ISOLATION_STALL,
    LEASE_RENEWED,
    LEASE_REVOKED,
    STALL,
    VIOLATION,
)
from ..lineage import RunTrace, TraceNode

__all__ = ["print_trace", "render_tree"]


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
        style = {"agent": "cyan", "model": "blue"}.get(node.kind, "magenta")
        text.append(f"{node.kind} ", style=style)
        text.append(node.name, style="bold")
        if node.framework:
            text.append(f"  via {node.framework}" + (f" ({node.call})" if node.call else ""), "dim")
    text.append("  ")
    text.append(node.status, style=status_style)
    if node.started:
        text.append(f"  {_fmt_us(node.duration_us)}", style="dim")
    if node.decision:
        effect, rule = node.decision["effect"], node.decision["rule"]
        text.append(f"  {effect} by {rule}", style="red" if effect == "deny" else "dim")
        if effect == "deny" and node.decision["reason"]:
            text.append(f": {node.decision['reason']}", style="red")
    if node.usage is not None:
        text.append(f"  {_usage(node.usage)}", style="blue")
    if node.approval:
        a = node.approval
        key = f" (key {a['approver_key']})" if a.get("approver_key") else ""
        why = f": {a['reason']}" if a.get("reason") else ""
        text.append(
            f"  approval {a['status']} by {a['approver']}{key}{why}",
            style="dim" if a["status"] == "granted" else "red",
        )
    if node.error and node.kind != "run":
        text.append(f"  {node.error}", style="red")
        if node.message:
            text.append(f": {node.message}", style="red")
    if node.stopped_here:
        text.append("  ◀ stopped here", style="bold red")
    return text


def _usage(usage: dict[str, int]) -> str:
    """``120 tokens (100 in, 20 out), cost 0.0012``: what model calls used."""
    split = ""
    if usage["input_tokens"] or usage["output_tokens"]:
        split = f" ({usage['input_tokens']} in, {usage['output_tokens']} out)"
    cost = f", cost {usage['cost_micros'] / 1e6:g}" if usage["cost_micros"] else ""
    return f"{usage['tokens']} tokens{split}{cost}"


def _event_text(ev: dict[str, Any]) -> Text | None:
    kind = ev["kind"]
    if kind == VIOLATION:
        return Text(
            f"✖ violation {ev['error']} (check={ev['check']}, source={ev['source']}): "
            f"{ev['reason']}",
            style="bold red",
        )
    if kind == LEASE_REVOKED:
        extra = f" (+{ev['cascade']} cascaded)" if ev["cascade"] not in ("", "0") else ""
        return Text(
            f"⚠ lease {ev['lease']} revoked by {ev['by']}: {ev['reason']}{extra}", style="red"
        )
    if kind == STALL:
        return Text(f"⚠ event loop stalled {ev['duration_ms']} ms in {ev['frame']}", style="yellow")
    if kind == ISOLATION_STALL:
        return Text(
            f"⚠ isolated process {ev['pid']} stalled {ev['duration_ms']} ms in {ev['frame']}",
            style="yellow",
        )
    if kind == ISOLATION_KILLED:
        return Text(f"✖ isolated process {ev['pid']} killed: {ev['reason']}", style="red")
    if kind == APPROVAL_REQUESTED:
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
    renewals = sum(1 for ev in node.events if ev["kind"] == LEASE_RENEWED)
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
    if tr.model_calls or tr.usage["tokens"] or tr.usage["cost_micros"]:
        calls = f"{tr.model_calls} model call{'s' if tr.model_calls != 1 else ''}, "
        yield Text(f"Usage: {calls}{_usage(tr.usage)}", style="blue")
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

"""The demo's live narration: its agents' own lines and its runs' ledgers, in ledger order.

A :class:`Narrator` tails each run's ``ledger.jsonl`` (complete lines only: a line still
being written is read at the next drain) and prints decisions, approvals, revocations,
stops and ends as they land; an agent's narration line first prints every ledger line
written before it, so the screen follows the ledger. Plain lines (rich styles only where the
terminal supports them): it works when stdout is not a TTY.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.text import Text

from ..evidence._format import (
    APPROVAL_DENIED,
    APPROVAL_GRANTED,
    DECISION,
    LEASE_REVOKED,
    RUN_END,
    STEP_START,
    STEPS_STOPPED,
    VIOLATION,
    carries_decision,
)

__all__ = ["Narrator"]


class _Tail:
    """Complete lines appended to a ledger file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[: end + 1].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


_EFFECT_STYLE = {
    "allow": ("✔ allow", "green"),
    "deny": ("✖ DENY", "bold red"),
    "require_approval": ("⏸ HOLD", "bold yellow"),
}


class Narrator:
    """Prints the demo's live progress: agent narration and the runs' ledgers, in order."""

    def __init__(self, console: Console, researchers: int) -> None:
        self.console = console
        self.researchers = researchers
        self.t0 = time.monotonic()
        self.tails: dict[str, tuple[str, _Tail]] = {}
        self.denials = 0
        self.approvals = 0
        self.research: dict[str, set[str]] = {}
        self.underway: dict[str, anyio.Event] = {}
        self.step_names: dict[tuple[str, str], str] = {}
        self.ended: set[str] = set()

    def watch(self, run_id: str, label: str, ledger: Path) -> None:
        """Start tailing ``ledger`` for the run ``run_id``, shown as ``label``."""
        self.tails[run_id] = (label, _Tail(ledger))
        self.research[run_id] = set()
        self.underway[run_id] = anyio.Event()

    def searched(self, run_id: str, subtopic: str) -> None:
        """A researcher finished a search: once all have, the run is 'underway'."""
        seen = self.research.setdefault(run_id, set())
        seen.add(subtopic)
        if len(seen) == self.researchers and run_id in self.underway:
            self.underway[run_id].set()

    def _print(self, label: str, who: str, body: Text) -> None:
        ms = (time.monotonic() - self.t0) * 1000
        line = Text(f"{ms:7.0f} ms  ", style="dim")
        line.append(f"{label:<8}", style="cyan")
        line.append(f" {who:<10} ", style="bold")
        line.append_text(body)
        self.console.print(line, soft_wrap=True)

    def drain(self) -> None:
        """Print every ledger record written since the last drain."""
        for run_id, (label, tail) in self.tails.items():
            for rec in tail.read():
                if rec.get("kind") == RUN_END:
                    self.ended.add(run_id)
                    self.underway[run_id].set()
                if rec.get("kind") == STEP_START:
                    self.step_names[(label, str(rec.get("step")))] = str(rec.get("target"))
                    if not carries_decision(rec):
                        continue
                if rec.get("kind") == STEPS_STOPPED:
                    for step in rec.get("steps") or ():
                        name = self.step_names.get((label, str(step)), "?")
                        self._print(
                            label, name, Text(f"■ stopped ({rec.get('error', '')})", style="red")
                        )
                    continue
                body_who = _describe(rec)
                if body_who is not None:
                    who, body = body_who
                    self._print(label, who, body)

    def say(self, who: str, text: str, *, run_id: str | None = None, style: str = "") -> None:
        """One narration line (after the ledger lines that precede it)."""
        self.drain()
        label = self.tails[run_id][0] if run_id in self.tails else "demo"
        self._print(label, who, Text(text, style=style))

    async def follow(self) -> None:
        """Drain the ledgers every 20 ms until cancelled."""
        while True:
            self.drain()
            await anyio.sleep(0.02)


def _describe(rec: dict[str, Any]) -> tuple[str, Text] | None:
    kind = rec.get("kind")
    s = {k: str(v) for k, v in rec.items() if isinstance(v, str | int)}
    if kind == DECISION or carries_decision(rec):
        label, style = _EFFECT_STYLE.get(s.get("effect", ""), (s.get("effect", "?"), ""))
        what = "agent" if s.get("action") == "invoke_agent" else "tool"
        body = Text(f"{label} ", style=style)
        body.append(f"{what} {s.get('target', '?')}  [rule {s.get('rule', '?')}]")
        if s.get("effect") == "require_approval":
            body.append("  waiting for an approver", style="yellow")
        return s.get("caller") or "runtime", body
    if kind == APPROVAL_GRANTED:
        return "approver", Text(
            f"✔ APPROVED request {s.get('request', '?')} (by {s.get('approver', '?')}, "
            f"key {s.get('approver_key', '?')[:6]}…, signed)",
            style="bold green",
        )
    if kind == APPROVAL_DENIED:
        return "approver", Text(f"✖ approval denied: {s.get('reason', '')}", style="bold red")
    if kind == LEASE_REVOKED:
        return "runtime", Text(
            f"⛔ lease {s.get('lease', '?')[:12]}… REVOKED, and every lease delegated under "
            f"it: {s.get('reason', '')}",
            style="bold red",
        )
    if kind == VIOLATION:
        return "runtime", Text(
            f"■ run stopped fail closed: {s.get('error', '?')} "
            f"check={s.get('check', '?')}: {s.get('reason', '')}",
            style="bold red",
        )
    if kind == RUN_END:
        status = s.get("status", "?")
        return "runtime", Text(
            f"run ended: {status}", style="bold green" if status == "ok" else "bold red"
        )
    return None

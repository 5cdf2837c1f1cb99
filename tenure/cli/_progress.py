"""The live progress display of ``tenure run``, read from the run's own evidence.

The display knows nothing of the engine: it tails the run's ``ledger.jsonl`` (the declared
record format) and counts what the ledger says — steps and tool calls against the run's
budgets, the agents running now, denials, elapsed time. It is shown only on a terminal;
``tenure run`` never draws it into a pipe or a file, or with ``--quiet``.

Invariants: only complete lines are read (a line still being written is read next time);
a line that does not parse is skipped (the verifier, not the display, judges evidence);
each refresh reads at most :data:`MAX_READ_BYTES`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from rich.console import Group
from rich.text import Text

from ..evidence._format import (
    DECISION,
    LEDGER_NAME,
    RUN_START,
    STEP_END,
    STEP_START,
    STEPS_STOPPED,
    USAGE,
)

__all__ = ["MAX_READ_BYTES", "Progress"]

MAX_READ_BYTES: Final = 4 << 20


@dataclass
class Progress:
    """Counts from the ledger of one run, refreshed by :meth:`poll`."""

    run_dir: Path
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    tools: int = 0
    denials: int = 0
    tokens: int = 0
    budgets: dict[str, Any] = field(default_factory=dict)
    _offset: int = 0
    _running: dict[str, str] = field(default_factory=dict)  # agent step id -> agent name

    def poll(self) -> None:
        """Read whatever complete records were appended since the last poll."""
        try:
            with (self.run_dir / LEDGER_NAME).open("rb") as f:
                f.seek(self._offset)
                chunk = f.read(MAX_READ_BYTES)
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                self._count(rec)

    def _count(self, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind == STEP_START:
            self.steps += 1
            if rec.get("action") == "execute_tool":
                self.tools += 1
            else:
                self._running[str(rec.get("step"))] = str(rec.get("target"))
        elif kind == STEP_END:
            self._running.pop(str(rec.get("step")), None)
        elif kind == STEPS_STOPPED and isinstance(rec.get("steps"), list):
            for step in rec["steps"]:
                self._running.pop(str(step), None)
        elif kind == DECISION and rec.get("effect") == "deny":
            self.denials += 1
        elif kind == USAGE and isinstance(rec.get("tokens"), int):
            self.tokens += rec["tokens"]
        elif kind == RUN_START and isinstance(rec.get("budgets"), dict):
            self.budgets = rec["budgets"]

    def _of(self, used: int, budget: str) -> str:
        limit = self.budgets.get(budget)
        return f"{used:,}" if limit is None else f"{used:,}/{limit}"

    def render(self, run_id: str) -> Group:
        """The display: one status line, then the agents running now."""
        elapsed = time.monotonic() - self.started
        line = Text()
        line.append(f"run {run_id}", style="bold")
        line.append(f"  {elapsed:6.1f}s", style="cyan")
        line.append(f"  steps {self._of(self.steps, 'max_steps')}")
        line.append(f"  tools {self._of(self.tools, 'max_tool_calls')}")
        if self.tokens:
            line.append(f"  tokens {self._of(self.tokens, 'max_tokens')}")
        if self.denials:
            line.append(f"  denied {self.denials}", style="red")
        names = Counter(self._running.values())
        agents = Text("  agents: ", style="dim")
        agents.append(
            ", ".join(f"{n}×{c}" if c > 1 else n for n, c in sorted(names.items())) or "none"
        )
        return Group(line, agents)

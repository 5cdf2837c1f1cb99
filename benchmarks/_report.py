"""Collect benchmark figures and show them as one table (terminal and Markdown).

A :class:`Report` holds rows: a figure, its unit, optionally the bare-anyio baseline measured
in the same process (then the ratio figure / baseline is shown) and optionally a target.
A target is a bound on the value or on the ratio (``≤`` or ``≥``); a row with a target
passes or fails, a row without one is informational.

Invariants: figures are never invented or rounded before storage; the Markdown and the
terminal table show the same rows in the order they were added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console
from rich.table import Table

__all__ = ["Report", "Row", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on a row's value (``on="value"``) or its ratio to the baseline."""

    limit: float
    op: Literal["<=", ">="] = "<="
    on: Literal["value", "ratio"] = "value"
    label: str = ""

    def met(self, value: float, ratio: float | None) -> bool | None:
        """Whether ``value`` (or ``ratio``) respects the bound; ``None`` if not measurable."""
        x = value if self.on == "value" else ratio
        if x is None or math.isnan(x):
            return None
        return x <= self.limit if self.op == "<=" else x >= self.limit

    def describe(self, unit: str) -> str:
        """E.g. ``≤ 1.05× bare`` or ``≥ 50,000 rec/s``."""
        if self.label:
            return self.label
        sign = "≤" if self.op == "<=" else "≥"
        if self.on == "ratio":
            return f"{sign} {self.limit:g}× bare"
        return f"{sign} {_num(self.limit)} {unit}".rstrip()


@dataclass(slots=True)
class Row:
    """One figure of the report."""

    group: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value / baseline, when a (non-zero) baseline was measured."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def ok(self) -> bool | None:
        """Pass/fail against the target; ``None`` when there is no target."""
        return None if self.target is None else self.target.met(self.value, self.ratio)


@dataclass
class Report:
    """An ordered collection of :class:`Row` plus free-text notes per group."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        group: str,
        name: str,
        value: float,
        unit: str,
        *,
        baseline: float | None = None,
        target: Target | None = None,
        note: str = "",
    ) -> Row:
        """Add a row and return it."""
        if not isinstance(value, int | float):
            raise TypeError(f"benchmark figure {name!r} must be a number, got {value!r}")
        row = Row(group, name, float(value), unit, baseline, target, note)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        """Add a free-text line shown under the table."""
        self.notes.append(text)

    @property
    def failed(self) -> list[Row]:
        """Rows whose target was missed."""
        return [r for r in self.rows if r.ok is False]

    # -- rendering ------------------------------------------------------------------------

    def _cells(self, row: Row) -> tuple[str, str, str, str, str]:
        value = f"{_num(row.value)} {row.unit}".rstrip()
        base = "" if row.baseline is None else f"{_num(row.baseline)} {row.unit}".rstrip()
        ratio = "" if row.ratio is None else f"{row.ratio:.3g}×"
        target = "" if row.target is None else row.target.describe(row.unit)
        ok = {True: "pass", False: "FAIL", None: ""}[row.ok]
        return value, base, ratio, target, ok

    def table(self, title: str = "Tenure benchmarks") -> Table:
        """A rich table of every row."""
        t = Table(title=title, show_lines=False)
        for col, justify in (
            ("group", "left"),
            ("benchmark", "left"),
            ("value", "right"),
            ("bare anyio", "right"),
            ("ratio", "right"),
            ("target", "left"),
            ("result", "left"),
        ):
            t.add_column(col, justify=justify)  # type: ignore[arg-type]
        for row in self.rows:
            value, base, ratio, target, ok = self._cells(row)
            style = {"pass": "green", "FAIL": "bold red"}.get(ok, "")
            name = row.name + (f" [dim]({row.note})[/dim]" if row.note else "")
            t.add_row(
                row.group,
                name,
                value,
                base,
                ratio,
                target,
                f"[{style}]{ok}[/{style}]" if style else ok,
            )
        return t

    def print(self, console: Console | None = None) -> None:
        """Print the table and the notes."""
        console = console or Console()
        console.print(self.table())
        for text in self.notes:
            console.print(f"- {text}", markup=False)

    def markdown(self) -> str:
        """The table (and notes) as GitHub Markdown."""
        lines = [
            "| group | benchmark | value | bare anyio | ratio | target | result |",
            "|---|---|--:|--:|--:|---|---|",
        ]
        for row in self.rows:
            value, base, ratio, target, ok = self._cells(row)
            name = row.name + (f" ({row.note})" if row.note else "")
            cells = [row.group, name, value, base, ratio, target, f"**{ok}**" if ok else ""]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {text}" for text in self.notes)
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    """Readable number: thousands separators for large, 3 significant digits for small."""
    if math.isnan(x):
        return "n/a"
    if x == int(x) and abs(x) >= 1000:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"

"""``tenure policy check FILE``: validate a policy file or folder and summarize it.

Invariants: a valid set exits 0 and prints its rules (id, effect, actions, targets), budgets,
rate limits and digest; an invalid one exits 1 and prints exactly one line,
``file:line: reason`` (the :class:`PolicyError` text). No other exception escapes for a bad
file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..policies._engine import PolicySet
from ..policies._model import PolicyError

__all__ = ["policy_check", "register", "render_summary"]


def _join(values: list[str] | None, any_text: str = "any") -> str:
    return ", ".join(values) if values else any_text


def render_summary(ps: PolicySet, console: Console) -> None:
    """Print the rules, budgets, rate limits and digest of ``ps`` to ``console``."""
    sources = ", ".join(str(s) for s in ps.sources) or "<text>"
    console.print(f"policy OK: {len(ps.rules)} rules from {sources}")
    rules = Table(title="rules", title_justify="left")
    for column in ("id", "effect", "principals", "actions", "targets", "callers", "when"):
        rules.add_column(column)
    for rule in ps.rules:
        when = ", ".join(
            f"{key} {op} {value!r}"
            for key, cond in (rule.when or {}).items()
            for op, value in cond.operators()
        )
        rules.add_row(
            rule.id,
            rule.effect,
            _join(rule.principals),
            _join(list(rule.actions) if rule.actions else None, "both"),
            _join(rule.targets),
            _join(rule.callers, "-"),
            when or "-",
        )
    console.print(rules)
    budgets = Table(title="budgets", title_justify="left")
    budgets.add_column("budget")
    budgets.add_column("limit")
    for name, value in ps.budgets.model_dump().items():
        budgets.add_row(name, "unlimited" if value is None else f"{value:g}")
    console.print(budgets)
    rates = Table(title="rate limits", title_justify="left")
    rates.add_column("target")
    rates.add_column("limit")
    units = {1: "s", 60: "m", 3600: "h"}
    for target, (count, per) in ps.rate_limits.items():
        rates.add_row(target, f"{count}/{units.get(per, f'{per}s')}")
    if not ps.rate_limits:
        rates.add_row("-", "none")
    console.print(rates)
    console.print(f"digest: {ps.digest}")


def policy_check(path: Path, *, width: int = 120) -> tuple[int, str]:
    """Validate ``path``; return ``(exit code, text to print)``: 0 valid, 1 invalid, 2 no
    such file."""
    if not path.exists():
        return 2, f"error: {path}: no such policy file or folder"
    try:
        ps = PolicySet.load(path)
    except PolicyError as exc:
        return 1, str(exc)
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    with console.capture() as capture:
        render_summary(ps, console)
    return 0, capture.get().rstrip("\n")


policy_app = typer.Typer(
    name="policy", help="Validate and inspect policy files.", no_args_is_help=True
)


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="A policy .toml file or a folder of them.")],
) -> None:
    """Validate a policy file or folder; print a summary, or `file:line: reason`."""
    code, text = policy_check(file)
    typer.echo(text, err=code != 0)
    if code:
        raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    """Add the ``policy`` command group (``tenure policy check FILE``) to ``app``."""
    app.add_typer(policy_app, name="policy")

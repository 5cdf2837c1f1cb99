"""``tenure trace RUN_DIR``: the lineage of a run as a tree, from its evidence ledger alone.

Exit codes: 0 the tree was printed (whatever the run's own outcome); 1 the ledger could
not be read (one line on stderr naming file, line and field); 2 usage (no such run
directory or file, a ``--jaeger`` file that cannot be written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..lineage import LedgerReadError, load_trace, to_jaeger
from ..lineage import trace_to_dict as _to_dict
from ._tree import print_trace

__all__ = ["register", "trace_command"]

EXIT_UNREADABLE = 1
EXIT_USAGE = 2


def trace_command(
    run_dir: Annotated[
        Path, typer.Argument(help="A run's evidence directory (or its ledger.jsonl).")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the tree as JSON instead of a rich tree.")
    ] = False,
    jaeger: Annotated[
        Path | None,
        typer.Option(
            "--jaeger",
            metavar="FILE",
            help="Also write Jaeger-UI JSON (Search → Upload JSON) to FILE.",
        ),
    ] = None,
) -> None:
    """Show a run as a tree: agents, tools, decisions, timings, where and why it stopped."""
    if not run_dir.exists():
        typer.echo(f"error: {run_dir}: no such run directory or ledger file", err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        tr = load_trace(run_dir)
    except (LedgerReadError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from exc
    if as_json:
        typer.echo(json.dumps(_to_dict(tr), indent=2, ensure_ascii=False))
    else:
        print_trace(tr, Console())
    if jaeger is not None:
        try:
            jaeger.write_text(json.dumps(to_jaeger(tr), indent=1), encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: cannot write {jaeger}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE) from exc
        typer.echo(f"wrote Jaeger JSON to {jaeger} (Jaeger UI: Search → Upload JSON)", err=True)


def register(app: typer.Typer) -> None:
    """Add the ``trace`` command to the root ``tenure`` app."""
    app.command("trace")(trace_command)

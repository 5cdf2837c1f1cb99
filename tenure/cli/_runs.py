"""``tenure runs [DIR] [--json] [--key PUB]``: the runs of an evidence directory, newest first.

One line per run: id, start time (UTC), principal, root agent, status (``run.end``'s, or
``unfinished``), records, and the verdict of :func:`tenure.evidence.verify_run`. Nothing is
written. Exit codes: 0 listed (whatever the runs' verdicts); 2 no such directory or key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._text import one_line
from ..crypto import PUBLIC_KEY_NAME, default_key_dir
from ..evidence import LEDGER_NAME, LedgerReadError, load_public_key, verify_run
from ..evidence._format import RUN_END, RUN_START
from ..evidence._reader import LedgerReader
from ._verify import EXIT_USAGE

__all__ = ["register"]

_VERDICT_STYLE = {"verified": "green", "incomplete": "yellow", "invalid": "bold red"}


def _summary(run_dir: Path, key: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_dir.name,
        "start_us": None,
        "principal": "",
        "agent": "",
        "status": "unfinished",
        "records": 0,
    }
    try:
        reader = LedgerReader(run_dir / LEDGER_NAME)
        for n, _, rec in reader:
            if n == 0 and rec["kind"] == RUN_START:
                row["start_us"] = rec.get("t")
                row["principal"] = rec.get("principal", "")
                row["agent"] = rec.get("agent", "")
            elif rec["kind"] == RUN_END:
                row["status"] = rec.get("status", "?")
        row["records"] = reader.count
    except (LedgerReadError, OSError) as exc:
        row["status"] = "unreadable"
        row["error"] = str(exc)
    rep = verify_run(run_dir, key)
    row["verdict"] = rep.verdict
    if rep.failures:
        row["failure"] = {"code": rep.failures[0].code, "message": rep.failures[0].line()}
    return row


def _when(us: int | None) -> str:
    if not isinstance(us, int):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us / 1e6))


def runs_command(
    directory: Annotated[
        Path, typer.Argument(metavar="[DIR]", help="the evidence directory (default ./runs)")
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="print the list as JSON")] = False,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="the runtime's public key (default: the key directory's)"),
    ] = None,
) -> None:
    """List the runs of an evidence directory, newest first, with their verdicts."""
    if not directory.is_dir():
        typer.echo(f"error: {directory}: no such evidence directory", err=True)
        raise typer.Exit(EXIT_USAGE)
    key_path = key if key is not None else default_key_dir() / PUBLIC_KEY_NAME
    public_key = None
    if key is not None or key_path.is_file():
        try:
            public_key = load_public_key(key_path)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    rows = [
        _summary(d, public_key)
        for d in directory.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / LEDGER_NAME).exists()
    ]
    rows.sort(key=lambda r: (r["start_us"] or 0, r["run_id"]), reverse=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        typer.echo(f"no runs in {directory}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("run", "started (UTC)", "principal", "agent", "status", "records", "evidence"):
        table.add_column(col, justify="right" if col == "records" else "left", no_wrap=True)
    for r in rows:
        table.add_row(
            Text(one_line(r["run_id"])),
            _when(r["start_us"]),
            Text(one_line(r["principal"])),
            Text(one_line(r["agent"])),
            Text(one_line(r["status"])),
            str(r["records"]),
            Text(
                r["verdict"] + (f" ({r['failure']['code']})" if "failure" in r else ""),
                style=_VERDICT_STYLE[r["verdict"]],
            ),
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 160  # a pipe or a file gets whole ids, never ellipses
    console.print(table)
    if public_key is None:
        typer.echo(
            "warning: no public key given or in the key directory: each run was checked "
            "against its own key copy",
            err=True,
        )


def register(app: typer.Typer) -> None:
    """Add ``runs`` to ``app``."""
    app.command("runs")(runs_command)

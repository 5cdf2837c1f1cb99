"""``tenure report RUN_DIR [-o FILE.html] [--key PUB]``: the run as one self-contained HTML page.

The page (see :mod:`tenure.lineage._report`) carries the verdict of a verification made when
it is generated, with the key trusted. The run directory is never written to: the default
output is ``<run_id>.report.html`` in the current directory.

Exit codes: 0 written (whatever the verdict: the page says it); 1 the ledger cannot be read
(one line naming file, line and field); 2 usage (no such run directory, unreadable key,
unwritable output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evidence import LedgerReadError, load_public_key, verify_run
from ..lineage._report import write_report
from ._verify import EXIT_INVALID, EXIT_USAGE

__all__ = ["register"]


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="the run directory")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="the HTML file to write (default <run_id>.report.html)"),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="the runtime's public key (PEM) to verify with")
    ] = None,
) -> None:
    """Write an HTML report of a run: verdict, authority, timeline, decisions, approvals."""
    if not run_dir.is_dir():
        typer.echo(f"error: {run_dir}: no such run directory", err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        public_key = load_public_key(key) if key is not None else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    rep = verify_run(run_dir, public_key)
    target = out if out is not None else Path(f"{rep.run_id or run_dir.name}.report.html")
    try:
        write_report(run_dir, target, rep)
    except LedgerReadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {target}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(f"wrote {target} ({rep.verdict}; open it in a browser)")


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app``."""
    app.command("report")(report_command)

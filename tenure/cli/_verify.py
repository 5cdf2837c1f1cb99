"""``tenure verify RUN_DIR [--key PUB] [--json]``: offline verification of a run's evidence.

Exit codes: 0 the evidence verifies; 1 it does not (one line ``record <i> (<kind>):
<problem>``); 2 usage errors (no such run directory, unreadable key file).
The command always says which key it trusted, and warns loudly when that was only the
copy inside the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..crypto._keys import load_public_key
from ..evidence._verify import VerifyReport, verify_run

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "register", "verify_command"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _print_human(rep: VerifyReport, console: Console, err: Console) -> None:
    if rep.key_source == "given":
        console.print(f"trusted key: [bold]{rep.key_id}[/] (given)")
    elif rep.key_source is not None:
        err.print(
            f"[bold yellow]WARNING[/]: trusted key {rep.key_id} is only the copy inside the "
            "run directory; anyone able to rewrite this evidence could have replaced it. "
            "Pass the runtime's public key with --key."
        )
    console.print(f"run: {rep.run_id or '?'}")
    console.print(
        f"records checked: {rep.records}, checkpoints: {rep.checkpoints}, "
        f"signed: {rep.signed_size}"
        + (f", witness: {rep.witness_size}" if rep.witness_size is not None else "")
    )
    if rep.torn_tail:
        err.print(
            f"[bold yellow]torn tail[/]: a final line of {rep.torn_bytes} bytes was not accepted"
        )
    for warning in rep.warnings:
        if "trusted only" in warning:
            continue  # already said above, louder
        err.print(f"[yellow]warning[/]: {warning}")
    console.print(f"run status: {rep.run_status}")
    if rep.ok:
        console.print("[bold green]verified[/]")
    else:
        err.print(f"[bold red]INVALID[/] {rep.failure_line()}", highlight=False)


def verify_command(
    run_dir: Annotated[Path, typer.Argument(help="the run directory (evidence_dir/<run_id>)")],
    key: Annotated[
        Path | None, typer.Option("--key", help="the runtime's public key (PEM) to trust")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Verify a run's evidence offline: signatures, hash chain, Merkle roots, leases, end."""
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if not run_dir.is_dir():
        err.print(f"error: {run_dir}: no such run directory")
        raise typer.Exit(EXIT_USAGE)
    public_key = None
    if key is not None:
        try:
            public_key = load_public_key(key)
        except ValueError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
    rep = verify_run(run_dir, public_key)
    if as_json:
        typer.echo(rep.to_json())
    else:
        _print_human(rep, console, err)
    raise typer.Exit(EXIT_OK if rep.ok else EXIT_INVALID)


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to ``app``."""
    app.command("verify")(verify_command)

"""``tenure verify RUN_DIR|BUNDLE [--key PUB] [--json] [--expect-run-id ID] [--allow-incomplete]``.

Offline verification of a run's evidence (a run directory, or an audit bundle from
``tenure export``). Exit codes:

====  ===========  ===============================================================
0     verified     every check passed and a signed checkpoint covers ``run.end``
1     invalid      a check failed: one line ``record <i> (<kind>): <problem>``
2     usage        no such run directory or bundle, unreadable key file, bad option
3     incomplete   nothing failed, but the evidence stops before a signed ``run.end``
                   (a crash, a live run, a cut tail); ``--allow-incomplete`` exits 0
====  ===========  ===============================================================

The command always says which key it trusted, and warns loudly when that was only the
copy shipped with the evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .._text import one_line
from ..evidence import (
    ATTESTATION_NAME,
    CHECKPOINT_NAME,
    PUBLIC_KEY_NAME,
    VerifyReport,
    load_public_key,
    verify_run,
)
from ..evidence._cluster import is_cluster_dir
from ._cluster import verify_exported

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "register",
    "verify_command",
]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


def _print_human(rep: VerifyReport, console: Console, err: Console) -> None:
    if rep.key_source == "given":
        console.print(f"trusted key: [bold]{rep.key_id}[/] (given)")
    elif rep.key_source is not None:
        err.print(
            f"[bold yellow]WARNING[/]: trusted key {rep.key_id} is only the {rep.key_source} "
            "shipped with the evidence; anyone able to rewrite this evidence could have "
            "replaced it. Pass the runtime's public key with --key."
        )
    console.print(f"run: {escape(one_line(rep.run_id or '?'))}")
    console.print(
        f"records checked: {rep.records}, checkpoints: {rep.checkpoints}, "
        f"signed: {rep.tree_size}"
        + (f", witness: {rep.witness_size}" if rep.witness_size is not None else "")
        + (f" ({rep.witness_source})" if rep.witness_source == "bundle" else "")
    )
    if rep.root is not None:
        console.print(f"root: {rep.root}")
    if rep.torn_tail:
        err.print(
            f"[bold yellow]torn tail[/]: a final line of {rep.torn_bytes} bytes was not accepted"
        )
    for warning in rep.warnings:
        if warning.code in ("key.run_copy", "ledger.torn_tail"):
            continue  # already said above, louder
        err.print(
            f"[yellow]warning[/] {escape(one_line(f'[{warning.code}]: {warning.message}', 2000))}"
        )
    console.print(f"run status: {escape(one_line(rep.run_status))}")
    if rep.verdict == "verified":
        console.print("[bold green]verified[/]")
    elif rep.verdict == "incomplete":
        err.print(
            "[bold yellow]INCOMPLETE[/]: the evidence verifies as far as it goes but no signed "
            "checkpoint covers a run.end (crashed, still running, or cut short)"
        )
    else:
        failure = rep.failures[0]
        err.print(
            f"[bold red]INVALID[/] {escape(one_line(f'[{failure.code}] {failure.line()}', 2000))}"
        )


def _not_a_run(path: Path) -> bool:
    """Nothing of a run's evidence is there (as opposed to evidence with its ledger gone)."""
    return path.is_dir() and not any(
        (path / name).exists() for name in (CHECKPOINT_NAME, PUBLIC_KEY_NAME, ATTESTATION_NAME)
    )


def verify_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR|BUNDLE",
            help="the run directory (evidence_dir/<run_id>), or an audit bundle from "
            "`tenure export` (a directory or .tar.gz)",
        ),
    ],
    key: Annotated[
        Path | None, typer.Option("--key", help="the runtime's public key (PEM) to trust")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    expect_run_id: Annotated[
        str | None,
        typer.Option(
            "--expect-run-id",
            help="the run the evidence must belong to (default: the directory's name)",
        ),
    ] = None,
    allow_incomplete: Annotated[
        bool,
        typer.Option(
            "--allow-incomplete",
            help="exit 0 for evidence that verifies but stops before a signed run.end",
        ),
    ] = False,
) -> None:
    """Verify a run's evidence offline: signatures, hash chain, Merkle roots, leases, end."""
    # Evidence is untrusted: everything from it is printed escaped, never as markup.
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not run_dir.exists():
        err.print(f"error: {escape(str(run_dir))}: no such run directory or bundle")
        raise typer.Exit(EXIT_USAGE)
    public_key = None
    if key is not None:
        try:
            public_key = load_public_key(key)
        except ValueError as exc:
            err.print(f"error: {escape(str(exc))}")
            raise typer.Exit(EXIT_USAGE) from exc
    if is_cluster_dir(run_dir):  # a run from many processes (tenure export --backend)
        verify_exported(run_dir, public_key, allow_incomplete)
    rep = verify_run(run_dir, public_key, expect_run_id=expect_run_id)
    if rep.failures and rep.failures[0].code == "evidence.missing" and _not_a_run(run_dir):
        err.print(escape(f"error: {run_dir} is not a run directory: {rep.failures[0].message}"))
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        typer.echo(json.dumps(rep.to_dict(), indent=2, sort_keys=True))
    else:
        _print_human(rep, console, err)
    if rep.verdict == "verified":
        raise typer.Exit(EXIT_OK)
    if rep.verdict == "incomplete":
        raise typer.Exit(EXIT_OK if allow_incomplete else EXIT_INCOMPLETE)
    raise typer.Exit(EXIT_INVALID)


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to ``app``."""
    app.command("verify")(verify_command)

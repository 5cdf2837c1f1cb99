"""``tenure export RUN --out FILE.tar.gz|DIR``: an audit bundle for offline verification.

The bundle (format in :mod:`tenure.evidence._bundle`) holds the run directory, the witness
copy of its latest checkpoint, the runtime's public key (``--key``, or the key directory's)
and a manifest with every file's digest and the verdict at export time. ``tenure verify``
accepts it (directory or ``.tar.gz``) and checks the witness it carries, so a rollback of the
copied evidence is caught without access to the original evidence directory.

``RUN`` is a run directory. The manifest lists runs as segments, so a multi-segment run
(``tenure export RUN_ID --backend URL``, distributed workers) fits the same format.

Exit codes: 0 written; 1 the evidence does not verify (nothing written); 2 usage (no such
run directory, output exists, no public key to ship).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..crypto import PUBLIC_KEY_NAME, default_key_dir
from ..evidence import load_public_key, verify_run
from ..evidence._bundle import write_bundle
from ..evidence._format import WITNESS_DIR, witness_path
from ._cluster import export_from_backend
from ._verify import EXIT_INVALID, EXIT_USAGE

__all__ = ["register"]


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def export_command(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR|RUN_ID", help="the run directory (or, with --backend, the run id)"
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="the bundle to write: FILE.tar.gz or a new DIR")
    ],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="the runtime's public key (default: the key directory's)"),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", help="export every segment of run RUN_ID from this shared backend"
        ),
    ] = None,
) -> None:
    """Write an audit bundle: run directory, witness copy, public key and manifest."""
    if backend is not None:
        export_from_backend(backend, str(run), out)
        return
    if not run.is_dir():
        raise _fail(EXIT_USAGE, f"{run}: no such run directory")
    if out.exists():
        raise _fail(EXIT_USAGE, f"{out} already exists; refusing to overwrite it")
    if not out.parent.is_dir():
        raise _fail(EXIT_USAGE, f"{out.parent}: no such directory")
    key_path = key if key is not None else default_key_dir() / PUBLIC_KEY_NAME
    try:
        public_key = load_public_key(key_path)
    except ValueError as exc:
        raise _fail(EXIT_USAGE, f"{exc} (pass the runtime's public key with --key)") from None
    rep = verify_run(run, public_key)
    if rep.verdict == "invalid":
        raise _fail(
            EXIT_INVALID, f"not exported, the evidence does not verify: {rep.failure_line()}"
        )
    assert rep.run_id is not None
    witness = witness_path(run.parent / WITNESS_DIR, rep.run_id)
    summary = {
        "verdict": rep.verdict,
        "run_status": rep.run_status,
        "tree_size": rep.tree_size,
        "root": rep.root,
        "key_id": rep.key_id,
        "verifier_key": rep.verifier_key,
        "witness_size": rep.witness_size,
    }
    try:
        write_bundle(
            run,
            out,
            run_id=rep.run_id,
            public_key=public_key,
            witness=witness if witness.is_file() else None,
            summary=summary,
        )
    except OSError as exc:
        raise _fail(EXIT_USAGE, f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {out}: run {rep.run_id}, {rep.verdict}, {rep.tree_size} records signed")
    if not witness.is_file():
        typer.echo(f"warning: no witness copy at {witness}; the bundle carries none", err=True)
    typer.echo(f"check it with: tenure verify {out} --key {key_path}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""
    app.command("export")(export_command)

"""``tenure prove`` and ``tenure verify-proof``: proofs a third party checks without the ledger.

``tenure prove RUN_DIR --record N`` prints the C2SP ``tlog-proof@v1`` inclusion proof of
record ``N`` against the run's signed checkpoint (the record travels in its ``extra``
line); ``--consistency OLD_SIZE`` prints the proof that the signed checkpoint of
``OLD_SIZE`` records is a prefix of the latest one (format in
:mod:`tenure.evidence._proof`). The run's evidence is verified first: no proof is made from
evidence that does not verify.

``tenure verify-proof PROOF --key PUB [--record FILE]`` checks one with only the proof (which
carries the record and the signed checkpoints) and the public key.

Exit codes: 0 the proof was made / verifies; 1 the evidence does not verify, or the proof
does not; 2 usage (no such file, bad key, a record or size the checkpoints do not cover).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evidence import load_public_key, verify_run
from ..evidence._proof import ProofError, prove_consistency, prove_inclusion, verify_proof
from ..evidence._reader import LedgerReadError, read_evidence_file
from ._verify import EXIT_INVALID, EXIT_USAGE

__all__ = ["register"]


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def prove_command(
    run_dir: Annotated[Path, typer.Argument(help="the run directory")],
    record: Annotated[
        int | None, typer.Option("--record", metavar="N", help="prove record N's inclusion")
    ] = None,
    consistency: Annotated[
        int | None,
        typer.Option(
            "--consistency",
            metavar="OLD_SIZE",
            help="prove the signed checkpoint of OLD_SIZE records is a prefix of the latest",
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="the runtime's public key (PEM) to verify with")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the proof to FILE (.tlog-proof)")
    ] = None,
) -> None:
    """Print an inclusion or consistency proof for a run's evidence."""
    if (record is None) == (consistency is None):
        raise _fail(EXIT_USAGE, "give exactly one of --record N or --consistency OLD_SIZE")
    if not run_dir.is_dir():
        raise _fail(EXIT_USAGE, f"{run_dir}: no such run directory")
    try:
        public_key = load_public_key(key) if key is not None else None
    except ValueError as exc:
        raise _fail(EXIT_USAGE, str(exc)) from None
    rep = verify_run(run_dir, public_key)
    if rep.verdict == "invalid":
        raise _fail(EXIT_INVALID, f"the evidence does not verify: {rep.failure_line()}")
    try:
        if record is not None:
            text = prove_inclusion(run_dir, record)
        else:
            assert consistency is not None
            text = prove_consistency(run_dir, consistency)
    except (ValueError, OSError) as exc:
        raise _fail(EXIT_USAGE, str(exc)) from None
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(EXIT_USAGE, f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {out}", err=True)


def verify_proof_command(
    proof: Annotated[Path, typer.Argument(help="the proof file (from `tenure prove`)")],
    key: Annotated[Path, typer.Option("--key", help="the runtime's public key (PEM)")],
    record: Annotated[
        Path | None,
        typer.Option("--record", help="a file holding the record's ledger line, to compare"),
    ] = None,
    expect_run_id: Annotated[
        str | None, typer.Option("--expect-run-id", help="the run the proof must be about")
    ] = None,
) -> None:
    """Check an inclusion or consistency proof with only the proof and the public key."""
    try:
        public_key = load_public_key(key)
        data = read_evidence_file(proof, 16 << 20)
        given = read_evidence_file(record, 8 << 20) if record is not None else None
    except (ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise _fail(EXIT_USAGE, f"{exc.filename}: no such file") from None
        if isinstance(exc, LedgerReadError | ValueError):
            raise _fail(EXIT_USAGE, str(exc)) from None
        raise _fail(EXIT_USAGE, f"{exc.strerror or exc}") from None
    try:
        check = verify_proof(data, public_key, record=given, expect_run_id=expect_run_id)
    except ProofError as exc:
        typer.echo(f"INVALID proof: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if check.kind == "inclusion":
        typer.echo(
            f"verified: record {check.index} of run {check.run_id} is included in its signed "
            f"checkpoint (size {check.tree_size}, root {check.root})"
        )
    else:
        typer.echo(
            f"verified: run {check.run_id}'s signed checkpoint of size {check.old_size} is a "
            f"prefix of the one of size {check.tree_size} (root {check.root})"
        )


def register(app: typer.Typer) -> None:
    """Add ``prove`` and ``verify-proof`` to ``app``."""
    app.command("prove")(prove_command)
    app.command("verify-proof")(verify_proof_command)

"""The multi-segment side of ``tenure export`` and ``tenure verify`` (a run from many hosts).

``tenure export RUN_ID --backend URL --out DIR`` writes every evidence segment of the run
from the shared backend (:mod:`tenure.runtime.backends._export`); ``tenure verify DIR
--key OPERATOR.pub`` checks it offline (:func:`tenure.evidence._cluster.verify_cluster`):
every segment under a key the operator certified, every cross-link and lease chain.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.markup import escape

from .._errors import GovernanceViolation
from .._text import one_line
from ..evidence._cluster import ClusterReport, verify_cluster
from ..runtime.backends import open_backend
from ..runtime.backends._export import export_run

__all__ = ["export_from_backend", "verify_exported"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def export_from_backend(url: str, run_id: str, out: Path) -> None:
    """``tenure export RUN_ID --backend URL --out DIR``."""

    async def export() -> list[str]:
        backend = await open_backend(url)
        try:
            return await export_run(backend, run_id, out)
        finally:
            await backend.close()

    try:
        segments = anyio.run(export)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (GovernanceViolation, RuntimeError, OSError) as exc:
        typer.echo(f"error: {getattr(exc, 'reason', exc)}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(f"wrote {out}: run {run_id}, {len(segments)} segment(s)")
    typer.echo(f"check it with: tenure verify {out} --key OPERATOR.pub", err=True)


def _print(rep: ClusterReport, console: Console, err: Console) -> None:
    for sid, seg in rep.segments.items():
        console.print(
            escape(f"segment {sid}: {seg.verdict}, {seg.records} records, ended {seg.run_status}")
        )
    for warning in rep.warnings:
        err.print(escape(one_line(f"warning: {warning}", 2000)))
    for failure in rep.failures:
        err.print(escape(one_line(f"FAILED: {failure}", 2000)))
    console.print(escape(f"run {rep.run_id}: {rep.verdict} ({len(rep.segments)} segments)"))


def verify_exported(path: Path, operator: Ed25519PublicKey | None, allow_incomplete: bool) -> None:
    """``tenure verify DIR [--key OPERATOR.pub]`` for an exported multi-segment run."""
    rep = verify_cluster(path, operator)
    _print(rep, Console(highlight=False), Console(stderr=True, highlight=False))
    if rep.verdict == "verified":
        raise typer.Exit(EXIT_OK)
    if rep.verdict == "incomplete":
        raise typer.Exit(EXIT_OK if allow_incomplete else EXIT_INCOMPLETE)
    raise typer.Exit(EXIT_INVALID)

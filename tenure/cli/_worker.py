"""``tenure worker --backend URL --agents MODULE --pool NAME``: serve a pool's delegations.

A long-lived process: it imports MODULE (a dotted module name, or a ``.py`` file) for its
``@agent``s, joins the control plane as a member of pool NAME and runs every step
delegated to that pool (``ctx.delegate(agent, ..., on="pool:NAME")``) governed, with
its own evidence segment (see ``tenure.runtime.backends._pool``). With ``--operator-key``
it runs only tasks whose leases are signed by a key the operator certified. It prints one
line when it is ready. SIGTERM or SIGINT drains it: no new claims, running parts finish or are
stopped after ``cleanup_grace``, exit 0. Exit codes: 1 the backend refused or could not be
reached (a schema it does not know included), 2 a usage error.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer

from .._errors import GovernanceViolation, UsageError
from ..crypto import load_public_key
from ..runtime.backends._pool import PoolWorker
from ._db import BACKEND_OPTION
from ._target import _import_file

__all__ = ["register"]

EXIT_FAILED = 1
EXIT_USAGE = 2


def _import_agents(module: str) -> None:
    if module.endswith(".py"):
        _import_file(Path(module))
        return
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"--agents {module}: cannot be imported: {exc}") from exc


async def _serve(worker: PoolWorker) -> None:
    async with worker:
        plane = worker.link.plane
        member = plane.member
        typer.echo(
            f"worker {worker.name} serving pool {worker.pool} "
            f"(member {member.id if member else '?'}, "
            f"generation {member.generation if member else '?'})"
        )
        sys.stdout.flush()
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        worker.drain()
                        grace = worker.rt.config.cleanup_grace
                        typer.echo(
                            f"worker {worker.name} draining: no new claims; running parts "
                            f"finish or are stopped after {grace:g}s"
                        )
                        sys.stdout.flush()
                        return

            tg.start_soon(on_signal)
            await worker.serve()
            tg.cancel_scope.cancel()
    typer.echo(f"worker {worker.name} drained after {worker.served} task(s)")


def worker_command(
    backend: Annotated[str, BACKEND_OPTION],
    agents: Annotated[
        str, typer.Option("--agents", help="module (or .py file) whose @agents this worker serves")
    ],
    pool: Annotated[str, typer.Option("--pool", help="the pool to serve")],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="parts of runs run at once")
    ] = 4,
    name: Annotated[
        str | None, typer.Option("--name", help="member name (default: HOST-PID)")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="this worker's private key (default: per-user key)")
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option("--cert", help="the operator's certificate of the key (tenure keys certify)"),
    ] = None,
    operator_key: Annotated[
        Path | None,
        typer.Option(
            "--operator-key",
            help="the operator's public key: run only tasks whose leases are signed by a key "
            "it certified (default: the key the queuing process registered in the backend)",
        ),
    ] = None,
    evidence_dir: Annotated[
        Path, typer.Option("--evidence-dir", help="where this worker's segments are written")
    ] = Path("runs"),
) -> None:
    """Serve the agents of MODULE for pool NAME until SIGTERM."""
    try:
        _import_agents(agents)
        certificate = json.loads(cert.read_text(encoding="utf-8")) if cert is not None else None
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read --cert {cert}: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        operator = load_public_key(operator_key) if operator_key is not None else None
    except (OSError, ValueError) as exc:
        typer.echo(f"error: --operator-key: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        worker = PoolWorker(
            pool=pool,
            name=name or f"{socket.gethostname()}-{os.getpid()}",
            concurrency=concurrency,
            backend=backend,
            key=key,
            evidence_dir=evidence_dir,
            certificate=certificate,
            operator_key=operator,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        anyio.run(_serve, worker)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (GovernanceViolation, RuntimeError) as exc:
        typer.echo(f"error: {getattr(exc, 'reason', exc)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the ``tenure`` app."""
    app.command("worker")(worker_command)

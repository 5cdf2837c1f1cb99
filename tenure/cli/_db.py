"""``tenure db upgrade --backend URL``: create or migrate the shared backend's schema.

Idempotent and safe from several hosts at once; every runtime and worker refuses to start
on a schema version it does not know, so run this (with the new Tenure) before starting
them. Exit codes: 0 the schema is current, 1 the backend refused or could not be reached,
2 a usage error.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import typer

from .._errors import GovernanceViolation
from ..runtime.backends import redact, upgrade_schema

__all__ = ["BACKEND_OPTION", "register"]

EXIT_FAILED = 1
EXIT_USAGE = 2

#: The ``--backend`` option every command that talks to a shared backend takes.
BACKEND_OPTION = typer.Option(
    "--backend",
    envvar="TENURE_BACKEND",
    help="the shared governance backend (postgresql://user@host:port/db; or TENURE_BACKEND)",
)

db_app = typer.Typer(help="Manage the shared governance backend.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade_command(backend: Annotated[str, BACKEND_OPTION]) -> None:
    """Create the schema, or migrate it to this Tenure's version."""
    try:
        applied = anyio.run(upgrade_schema, backend)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (GovernanceViolation, RuntimeError) as exc:
        typer.echo(f"error: {getattr(exc, 'reason', exc)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    where = redact(backend)
    if applied:
        typer.echo(f"{where}: applied schema migration(s) {', '.join(map(str, applied))}")
    else:
        typer.echo(f"{where}: schema already current")


def register(app: typer.Typer) -> None:
    """Add ``db`` to the ``tenure`` app."""
    app.add_typer(db_app, name="db")

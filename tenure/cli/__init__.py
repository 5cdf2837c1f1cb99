"""The ``tenure`` command line: a thin typer app over the library.

Each command lives in its own module and registers itself here. Exit codes: 0 success,
1 a governance or verification failure (one line saying why), 2 a usage error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from ._approvals import register as _register_approvals
from ._db import register as _register_db
from ._export import register as _register_export
from ._keys import register as _register_keys
from ._mcp_proxy import register as _register_mcp_proxy
from ._policy import register as _register_policy
from ._prove import register as _register_prove
from ._report import register as _register_report
from ._revoke import register as _register_revoke
from ._run import register as _register_run
from ._runs import register as _register_runs
from ._trace import register as _register_trace
from ._verify import register as _register_verify
from ._worker import register as _register_worker

__all__ = ["app", "main"]

app = typer.Typer(
    name="tenure",
    help="Governed execution for AI agents: run, verify and trace with evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"tenure {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Governed execution for AI agents: run, verify and trace with evidence."""


for _register in (
    _register_verify,
    _register_trace,
    _register_runs,
    _register_report,
    _register_prove,
    _register_export,
    _register_policy,
    _register_keys,
    _register_run,
    _register_revoke,
    _register_db,
    _register_worker,
    _register_approvals,
    _register_mcp_proxy,
):
    _register(app)


def main() -> None:
    """Console-script entry point."""
    app()

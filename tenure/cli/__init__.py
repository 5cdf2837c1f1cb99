"""The ``tenure`` command line: a thin typer app over the library.

Each command lives in its own module and registers itself here. Exit codes: 0 success,
1 a governance or verification failure (one line saying why), 2 a usage error.
"""

from __future__ import annotations

import typer

from ._keys import register as _register_keys
from ._policy import register as _register_policy
from ._revoke import register as _register_revoke
from ._run import register as _register_run
from ._trace import register as _register_trace
from ._verify import register as _register_verify

__all__ = ["app", "main"]

app = typer.Typer(
    name="tenure",
    help="Governed execution for AI agents: run, verify and trace with evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _register in (
    _register_verify,
    _register_trace,
    _register_policy,
    _register_keys,
    _register_run,
    _register_revoke,
):
    _register(app)


def main() -> None:
    """Console-script entry point."""
    app()

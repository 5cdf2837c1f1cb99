"""``tenure mcp-proxy [OPTIONS] -- SERVER_COMMAND ARGS...``: govern any stdio MCP server.

Put it in an MCP client's configuration in place of the server's own command: the client
talks MCP to the proxy on stdin/stdout, the proxy runs the real server as its child and
makes every ``tools/call`` a governed step of one run (the session). Nothing but MCP is
written to stdout; the run id, evidence folder and the reason of a stop go to stderr.

Exit codes: 0 the session ended normally; 1 its run was stopped by a governance violation
(one line on stderr: class, check, reason); 2 a usage error (no server command, a bad policy,
a server that cannot be started, the ``mcp`` extra missing).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from .._errors import GovernanceViolation, UsageError
from ._run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EvidenceDirOption, PolicyOption
from ._target import load_policy

__all__ = ["register"]


def _say(text: str) -> None:
    typer.echo(f"tenure mcp-proxy: {text}", err=True)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _why(exc: GovernanceViolation) -> str:
    return f"{type(exc).__name__} ({exc.check}): {exc.reason}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _tool_scopes(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        tool, sep, scope = item.partition("=")
        if not sep or not tool or not scope:
            raise UsageError(
                f"--tool-scope {item!r}: expected TOOL=SCOPE, e.g. write_file=fs:write"
            )
        out.setdefault(tool, []).append(scope)
    return out


async def _serve(
    command: list[str],
    *,
    policy: Any,
    evidence_dir: Path,
    principal: str,
    scopes: list[str],
    ttl: float,
    tool_scopes: dict[str, list[str]],
    backend: str | None,
) -> int:
    from ..lineage._spans import Lineage
    from ..runtime._runtime import Runtime

    try:
        from ..adapters.mcp import McpProxy
    except ModuleNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    # One provider (from the OTEL_* variables, if any) for Tenure's spans and the MCP SDK's,
    # so the client's trace runs through the proxy into the server.
    lineage = Lineage()
    provider = lineage.tracer_provider
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
    try:
        async with Runtime(
            policies=policy,
            evidence_dir=evidence_dir,
            tracer_provider=provider,
            backend=backend,
        ) as rt:
            proxy = McpProxy(
                rt,
                command,
                principal=principal,
                scopes=scopes,
                ttl=ttl,
                tool_scopes=tool_scopes,
                on_start=lambda h: _say(f"session run {h.run_id}, evidence {h.evidence_path}"),
            )
            try:
                handle = await proxy.serve_stdio()
            except OSError as exc:
                raise UsageError(f"cannot start the server {command[0]!r}: {exc}") from exc
            except GovernanceViolation as exc:  # the policy refused the session itself
                _say(f"error: {_why(exc)}")
                return EXIT_FAILED
            except Exception as exc:  # the server broke the session (crashed, spoke no MCP)
                leaf = _leaf(exc)
                raise UsageError(
                    f"the server {command[0]!r} failed: {type(leaf).__name__}: {leaf}"
                ) from exc
            try:
                await handle.result()
            except GovernanceViolation as exc:
                _say(f"run {handle.run_id} stopped: {_why(exc)}")
                return EXIT_FAILED
            _say(f"session ended; verify with: tenure verify {handle.evidence_path}")
            return EXIT_OK
    finally:
        lineage.shutdown()


def mcp_proxy_command(
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="-- SERVER_COMMAND [ARGS]...", help="the real MCP server"),
    ] = None,
    policy: PolicyOption = None,
    principal: Annotated[
        str, typer.Option("--principal", "-p", help="who authorizes the session (default: you)")
    ] = "",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", "-s", help="a scope granted to the session (repeat for several)"),
    ] = None,
    tool_scope: Annotated[
        list[str] | None,
        typer.Option("--tool-scope", metavar="TOOL=SCOPE", help="a scope TOOL needs (repeat)"),
    ] = None,
    ttl: Annotated[
        float, typer.Option("--ttl", min=0.001, help="seconds the session may last at most")
    ] = 3600.0,
    evidence_dir: EvidenceDirOption = Path("runs"),
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            envvar="TENURE_BACKEND",
            help="a shared governance backend (postgresql://...): approvals answered with "
            "`tenure approvals`, revocations and policy epochs from any host",
        ),
    ] = None,
) -> None:
    """Serve MCP on stdio in front of SERVER_COMMAND; every tool call is governed."""
    try:
        if not command:
            raise UsageError(
                "no server command: tenure mcp-proxy [OPTIONS] -- SERVER_COMMAND ARGS..."
            )
        who = principal or _user()
        if not who:
            raise UsageError("--principal is required (who authorizes this session?)")
        policy_set = load_policy(policy)
        code = anyio.run(
            lambda: _serve(
                list(command),
                policy=policy_set,
                evidence_dir=evidence_dir,
                principal=who,
                scopes=list(scope or []),
                ttl=ttl,
                tool_scopes=_tool_scopes(list(tool_scope or [])),
                backend=backend,
            )
        )
    except Exception as exc:  # the runtime's task group may wrap what was raised in it
        leaf = _leaf(exc)
        if isinstance(leaf, UsageError):
            _say(f"error: {leaf}")
            raise typer.Exit(EXIT_USAGE) from None
        if isinstance(leaf, GovernanceViolation):  # the session could not start
            _say(f"error: {_why(leaf)}")
            raise typer.Exit(EXIT_FAILED) from None
        raise
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``mcp-proxy`` to the ``tenure`` app."""
    app.command("mcp-proxy")(mcp_proxy_command)

"""``tenure mcp-proxy [OPTIONS] (-- SERVER_COMMAND ARGS... | --upstream URL)``: govern any
MCP server.

Put it in an MCP client's configuration in place of the server: the client talks MCP to
the proxy on stdin/stdout (or, with ``--listen HOST:PORT``, over Streamable HTTP at
``--path``), the proxy runs the real server as its child (or reaches ``--upstream URL`` over
Streamable HTTP) and makes every ``tools/call`` a governed step of the session's run. Over
HTTP every MCP session is its own run with its own upstream. Nothing but MCP is written to
stdout; run ids, evidence folders and the reasons of stops go to stderr.

Exit codes: 0 the session ended normally (``--listen``: the proxy was stopped by SIGINT or
SIGTERM; the sessions' own ends are on stderr); 1 the stdio session's run was stopped by a
governance violation (one line on stderr: class, check, reason); 2 a usage error (no
server, a bad policy or option value, a server that cannot be started or reached, a port
in use, the ``mcp`` extra missing).
"""

from __future__ import annotations

import getpass
import ipaddress
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import anyio
import typer

from .._errors import GovernanceViolation, UsageError
from ._run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EvidenceDirOption, PolicyOption
from ._target import load_policy

if TYPE_CHECKING:
    from ..adapters.mcp import McpProxy
    from ..runtime._runtime import RunHandle, Runtime

__all__ = ["register"]

#: seconds the upstream has to answer the proxy's check before it serves anyone
CHECK_S = 20.0
_LISTEN_EXAMPLE = "e.g. 127.0.0.1:8765, [::1]:8765, 8765 (loopback), or 127.0.0.1:0 (any free port)"


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


def _listen(value: str, *, allow_remote: bool) -> tuple[str, int]:
    host, _, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"  # a bare PORT: loopback
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {value!r}: expected HOST:PORT, {_LISTEN_EXAMPLE}")
    if not _is_loopback(host):
        try:
            socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise UsageError(
                f"--listen {value!r}: HOST must be an IP address or localhost, {_LISTEN_EXAMPLE}"
            ) from None
        if not allow_remote:
            raise UsageError(
                f"--listen {value!r} is not a loopback address: the proxy has no "
                "authentication, so serving other machines needs --allow-remote"
            )
    return host, int(port_text)


def _bind(value: str, host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"--listen {value!r}: cannot listen there: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen {value!r}: cannot listen there: {exc}") from exc
    return sock


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--upstream {url!r}: expected an http:// or https:// URL of a Streamable HTTP "
            "MCP server, e.g. http://127.0.0.1:8000/mcp"
        )
    return url


def _say_end(handle: RunHandle, exc: BaseException | None) -> None:
    if isinstance(exc, GovernanceViolation):
        _say(f"run {handle.run_id} stopped: {_why(exc)}")
    _say(f"session run {handle.run_id} ended; verify with: tenure verify {handle.evidence_path}")


async def _check(proxy: McpProxy, upstream: str, command: list[str]) -> None:
    """The upstream answers before the proxy serves anyone: a bad one is a usage error."""
    try:
        with anyio.fail_after(CHECK_S):
            await proxy.check_upstream()
    except TimeoutError:
        what = f"--upstream {upstream!r}" if upstream else f"the server {command[0]!r}"
        raise UsageError(f"{what}: no MCP answer within {CHECK_S:g} s") from None
    except OSError as exc:
        raise UsageError(f"cannot start the server {command[0]!r}: {exc}") from exc
    except Exception as exc:
        leaf = _leaf(exc)
        if upstream:
            raise UsageError(
                f"--upstream {upstream!r}: no MCP server answered there: "
                f"{type(leaf).__name__}: {leaf}"
            ) from exc
        raise UsageError(
            f"the server {command[0]!r} failed: {type(leaf).__name__}: {leaf}"
        ) from exc


async def _serve_http(
    proxy: McpProxy, sock: socket.socket, *, path: str, loopback: bool, shown: str
) -> int:
    stop = anyio.Event()

    async def on_signal() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signal)
        _say(f"serving MCP (Streamable HTTP) on {shown}")
        await proxy.serve_http(
            sock,
            path=path,
            stop=stop,
            loopback_only=loopback,
            on_end=_say_end,
            on_error=lambda exc: _say(f"session failed: {type(exc).__name__}: {exc}"),
        )
        tg.cancel_scope.cancel()
    _say("stopped")
    return EXIT_OK


async def _serve_stdio(proxy: McpProxy, name: str) -> int:
    try:
        handle = await proxy.serve_stdio()
    except OSError as exc:
        raise UsageError(f"cannot start the server {name!r}: {exc}") from exc
    except GovernanceViolation as exc:  # the policy refused the session itself
        _say(f"error: {_why(exc)}")
        return EXIT_FAILED
    except Exception as exc:  # the server broke the session (crashed, spoke no MCP)
        leaf = _leaf(exc)
        raise UsageError(f"the server {name!r} failed: {type(leaf).__name__}: {leaf}") from exc
    try:
        await handle.result()
    except GovernanceViolation as exc:
        _say(f"run {handle.run_id} stopped: {_why(exc)}")
        return EXIT_FAILED
    _say(f"session ended; verify with: tenure verify {handle.evidence_path}")
    return EXIT_OK


async def _serve(
    command: list[str],
    *,
    upstream: str,
    listen: tuple[str, str, int] | None,
    path: str,
    policy: Any,
    evidence_dir: Path,
    principal: str,
    scopes: list[str],
    ttl: float,
    tool_scopes: dict[str, list[str]],
    backend: str | None,
) -> int:
    from ..lineage._spans import Lineage
    from ..runtime import Runtime

    try:
        from ..adapters.mcp import McpProxy
    except ModuleNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    sock = _bind(*listen) if listen is not None else None
    # One provider (from the OTEL_* variables, if any) for Tenure's spans and the MCP SDK's,
    # so the client's trace runs through the proxy into the server.
    lineage = Lineage()
    provider = lineage.tracer_provider
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
    try:
        rt: Runtime
        async with Runtime(
            policies=policy,
            evidence_dir=evidence_dir,
            tracer_provider=provider,
            backend=backend,
        ) as rt:
            proxy = McpProxy(
                rt,
                command or None,
                url=upstream or None,
                principal=principal,
                scopes=scopes,
                ttl=ttl,
                tool_scopes=tool_scopes,
                on_start=lambda h: _say(f"session run {h.run_id}, evidence {h.evidence_path}"),
            )
            if sock is None:
                if upstream:
                    await _check(proxy, upstream, command)
                return await _serve_stdio(proxy, command[0] if command else upstream)
            assert listen is not None
            await _check(proxy, upstream, command)
            host, port = sock.getsockname()[:2]
            shown = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
            return await _serve_http(
                proxy, sock, path=path, loopback=_is_loopback(listen[1]), shown=shown
            )
    finally:
        if sock is not None:
            sock.close()
        lineage.shutdown()


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="serve MCP over Streamable HTTP there instead of stdio (a bare PORT: "
            "127.0.0.1; loopback only unless --allow-remote); every MCP session is its own run",
        ),
    ] = None,
    path: Annotated[
        str, typer.Option("--path", help="the URL path MCP is served at, with --listen")
    ] = "/mcp",
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="allow --listen on a non-loopback address. The proxy has NO authentication: "
            "anyone who can reach it acts with the sessions' authority",
        ),
    ] = False,
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream",
            metavar="URL",
            help="reach the server over Streamable HTTP instead of running SERVER_COMMAND. "
            "It is not the proxy's to kill: on a stop the calls in flight are cancelled, its "
            "session is closed and nothing more is forwarded, but a remote tool that ignores "
            "cancellation may still finish",
        ),
    ] = "",
) -> None:
    """Serve MCP in front of a server (stdio, or HTTP with --listen); every tool call is
    governed."""
    try:
        if command and upstream:
            raise UsageError("give either --upstream URL or -- SERVER_COMMAND, not both")
        if not command and not upstream:
            raise UsageError(
                "no server: tenure mcp-proxy [OPTIONS] -- SERVER_COMMAND ARGS... "
                "(or --upstream URL)"
            )
        if upstream:
            _check_url(upstream)
        if not path.startswith("/"):
            raise UsageError(f"--path {path!r}: expected a URL path starting with /, e.g. /mcp")
        where = (listen, *_listen(listen, allow_remote=allow_remote)) if listen else None
        who = principal or _user()
        if not who:
            raise UsageError("--principal is required (who authorizes this session?)")
        policy_set = load_policy(policy)
        code = anyio.run(
            lambda: _serve(
                list(command or []),
                upstream=upstream,
                listen=where,
                path=path,
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

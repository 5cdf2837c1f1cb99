"""The governing MCP proxy: any MCP client on one side, the real server on the other.

A client is governed by pointing it at the proxy instead of the server (``tenure mcp-proxy
-- SERVER_COMMAND ARGS...`` on stdio, or ``--listen HOST:PORT`` for Streamable HTTP). Each
client session is one Tenure run with its own upstream (a child process, or a session to
``--upstream URL``), whose root agent ``mcp_proxy`` holds the lease while the session is
open; every ``tools/call`` is a governed step of it (``Context.govern``), keyed by the
JSON-RPC request id. This module is the governance; the transports are apart from it
(``_upstream.py`` / ``_remote.py`` upstream, ``_http.py`` for HTTP clients).

Invariants:

- ``tools/list`` passes through; ``tools/call`` reaches the server only when allowed:
  denied → an ``is_error`` result naming the rule (the server never sees the call); held
  for approval → the request waits for a person's answer; after the run stopped → an
  ``is_error`` result saying why, for every later call too.
- A run stop (revocation, expiry, policy reload, ...) cancels the calls in flight (each ends
  with an ``is_error`` result) and kills the server process group: a server that ignores
  ``notifications/cancelled`` cannot finish its side effect. A remote upstream (a URL) is
  not the proxy's to kill: its session is closed and nothing more is forwarded.
- A client that cancels a request cancels the upstream call; its end is recorded.
- The proxy serves tools only: resources, prompts, sampling and elicitation are not
  forwarded (not advertised), so nothing reaches the server around the policy.
- The W3C trace context travels in ``_meta`` both ways: the client's span parents the
  governed step's span, whose context the upstream request carries on.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from tenure import Context, GovernanceViolation, RunHandle, Runtime, agent

from ._remote import check_url, connect_upstream
from ._session import ProxySession
from ._upstream import Upstream, spawn_upstream

__all__ = ["AGENT_NAME", "McpProxy", "mcp_proxy"]

#: the root agent of a proxied session (what a policy's ``invoke_agent`` rule must allow,
#: and the ``callers`` name of every proxied tool call)
AGENT_NAME: Final = "mcp_proxy"
FRAMEWORK: Final = "mcp"

_SESSIONS: dict[str, _Session] = {}


@dataclass
class _Session:
    upstream: Upstream
    ctx: Context | None = None
    ready: anyio.Event = field(default_factory=anyio.Event)
    closed: anyio.Event = field(default_factory=anyio.Event)
    ended: BaseException | None = None
    tools: types.ListToolsResult | None = None
    calls: int = 0


@agent(name=AGENT_NAME)
async def mcp_proxy(ctx: Context, session: str, server: str) -> dict[str, Any]:
    """One proxied MCP session: holds the run's lease while the client is connected."""
    s = _SESSIONS[session]
    s.ctx = ctx
    s.ready.set()
    await s.closed.wait()
    return {"server": server, "tool_calls": s.calls}


class McpProxy:
    """Govern every tool call of MCP client sessions to one upstream server.

    The upstream is ``command``'s server, spawned as the proxy's child for each session
    (a run's stop kills it), or the Streamable HTTP server at ``url`` (a run's stop closes
    the session to it). Each client session is one run: :meth:`serve_stdio` and
    :meth:`serve` serve one; :meth:`serve_http` serves any number over Streamable HTTP.

    Args:
        runtime: an open :class:`~tenure.Runtime` (its policy, evidence, approvals).
        command: the real server's command line (spawned as the proxy's child).
        url: instead of ``command``, the ``http(s)://`` URL of a Streamable HTTP server.
        principal, scopes, ttl: each run's, as for ``rt.start``; ``ttl`` bounds a session.
        tool_scopes: scopes each tool needs from the lease, by tool name.
        on_start: called with a session's run handle as soon as its run started.
    """

    def __init__(
        self,
        runtime: Runtime,
        command: Sequence[str] | None = None,
        *,
        url: str | None = None,
        principal: str,
        scopes: Sequence[str] = (),
        ttl: float = 3600.0,
        tool_scopes: Mapping[str, Sequence[str]] | None = None,
        on_start: Callable[[RunHandle], None] | None = None,
    ) -> None:
        if (command is None) == (url is None):
            raise ValueError("give exactly one upstream: a server command or a url")
        if command is not None and (isinstance(command, str) or not command):
            raise ValueError(f"command must be a non-empty list of arguments, got {command!r}")
        self._rt = runtime
        self._command = list(command) if command is not None else None
        self._url = check_url(url) if url is not None else None
        self._principal = principal
        self._scopes = list(scopes)
        self._ttl = ttl
        self._tool_scopes = {k: frozenset(v) for k, v in (tool_scopes or {}).items()}
        self._on_start = on_start
        self.handle: RunHandle | None = None
        self.upstream: Upstream | None = None

    async def serve_stdio(self) -> RunHandle:
        """Serve the client on this process's stdin/stdout until it disconnects."""
        # The session first: a server that cannot start, or a run the policy refuses,
        # raises before stdio is claimed.
        async with self.session() as session, stdio_server() as (read, write):
            await session.serve(read, write)
        return session.handle

    async def serve(self, read: Any, write: Any) -> RunHandle:
        """Serve one connection until the client closes it; the run's handle (ended).

        ``read`` / ``write`` are the MCP SDK's server streams (what ``stdio_server()`` or a
        memory transport yields).

        Raises the run's violation at once if the session could not start (e.g. the policy
        does not allow ``invoke_agent mcp_proxy`` for this principal).
        """
        try:
            async with self.session() as session:
                await session.serve(read, write)
        except BaseException:
            await write.aclose()  # the transport waits for its streams to close
            await read.aclose()
            raise
        return session.handle

    async def serve_http(
        self,
        listener: socket.socket,
        *,
        path: str = "/mcp",
        stop: anyio.Event,
        loopback_only: bool = True,
        on_end: Callable[[RunHandle, BaseException | None], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Serve MCP over Streamable HTTP on ``listener`` at ``path`` until ``stop`` is set.

        Every MCP session (``Mcp-Session-Id``) is its own run with its own upstream; when
        ``stop`` is set the open sessions are ended (their runs end ``ok``) and this
        returns. ``loopback_only`` keeps DNS-rebinding protection on (Host / Origin must
        be a loopback name). ``on_end`` gets each ended run and its violation (if any);
        ``on_error`` each session that could not open (policy, upstream) or broke (its
        upstream failed) without ending the others.
        """
        from ._http import HttpSessions

        front = HttpSessions(
            self.session, path=path, loopback_only=loopback_only, on_end=on_end, on_error=on_error
        )
        await front.serve(listener, stop)

    async def check_upstream(self) -> None:
        """Connect to the upstream once and close it again: raises what connecting raises
        (``OSError`` for a server that cannot start, the HTTP client's error for a URL with
        nothing listening, an ``MCPError`` from a server that refused ``initialize``)."""
        async with self._upstream():
            pass

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ProxySession]:
        """One governed session: its upstream connected and its run started.

        Raises, before yielding, what kept the session from opening: the run's violation
        (the policy refused ``invoke_agent mcp_proxy``), ``OSError`` (a server that cannot
        start), the connection's error (an unreachable ``url``). Leaving it ends the run.
        """
        sid = secrets.token_hex(8)
        refused: BaseException | None = None
        async with self._upstream() as up, anyio.create_task_group() as tg:
            self.upstream = up
            s = _SESSIONS[sid] = _Session(up)
            try:
                handle = await self._rt.start(
                    mcp_proxy,
                    sid,
                    up.name,
                    principal=self._principal,
                    scopes=self._scopes,
                    ttl=self._ttl,
                )
                self.handle = handle
                if self._on_start is not None:
                    self._on_start(handle)
                tg.start_soon(self._watch, handle, s)
                await s.ready.wait()
                if s.ctx is None:  # the run ended before the session could start
                    refused = s.ended
                else:
                    yield ProxySession(handle, self._server(s))
            finally:
                s.closed.set()
                _SESSIONS.pop(sid, None)
        # raised out here: the task group would wrap it in an exception group
        if refused is not None:
            raise refused

    def _upstream(self) -> contextlib.AbstractAsyncContextManager[Upstream]:
        if self._command is not None:
            return spawn_upstream(self._command)
        assert self._url is not None
        return connect_upstream(self._url)

    async def _watch(self, handle: RunHandle, s: _Session) -> None:
        try:
            await handle.result()
        except BaseException as exc:  # the run's outcome, kept for every later call
            s.ended = exc
            if isinstance(exc, GovernanceViolation):
                s.upstream.kill()  # the hard stop (a child) or the closed session (a url)
            if not isinstance(exc, Exception):
                raise
        finally:
            s.ended = s.ended or _SessionOver("the session's run has ended")
            s.ready.set()

    def _server(self, s: _Session) -> Server[Any]:
        up = s.upstream
        info = up.init.server_info

        async def list_tools(
            ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            if s.ended is None:
                s.tools = await up.session.list_tools(params=params)
            return s.tools or types.ListToolsResult(tools=[])

        async def call_tool(
            ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            name, args = params.name, dict(params.arguments or {})
            run_ctx = s.ctx
            if s.ended is not None or run_ctx is None:
                return _refused(name, s.ended, stopped=True)

            async def forward() -> types.CallToolResult:
                result = await up.session.call_tool(name, args)
                assert isinstance(result, types.CallToolResult)
                return result

            s.calls += 1
            try:
                return await run_ctx.govern(
                    name,
                    args,
                    forward,
                    call_id=str(ctx.request_id),
                    framework=FRAMEWORK,
                    scopes=self._tool_scopes.get(name, ()),
                    tool_type="extension",
                )
            except GovernanceViolation as exc:
                return _refused(name, exc, stopped=run_ctx.stop is not None)

        return Server(
            f"tenure-proxy:{info.name}",
            version=info.version,
            instructions=up.init.instructions,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
        )


class _SessionOver(Exception):
    """The session's run ended without a violation (the client is going away)."""


def _refused(tool: str, why: BaseException | None, *, stopped: bool) -> types.CallToolResult:
    """The error result the model sees: what was refused, by which rule or check, and why."""
    if isinstance(why, GovernanceViolation) and not stopped:
        rule = (why.check or "policy").removeprefix("rule:")
        text = f"Denied by Tenure ({rule}): {why.reason}. The tool {tool} was not run."
    elif isinstance(why, GovernanceViolation):
        text = (
            f"Tenure stopped this session ({type(why).__name__}, {why.check}): {why.reason}. "
            f"The tool {tool} did not run to completion; no further tool call will run."
        )
    else:
        text = f"Tenure: the governed session has ended; the tool {tool} was not run."
    return types.CallToolResult(is_error=True, content=[types.TextContent(text=text)])

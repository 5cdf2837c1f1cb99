"""MCP clients reach the proxy over Streamable HTTP: each MCP session is one governed run.

A run per session, not per proxy process: the session is what a client opens and closes,
what its JSON-RPC ids are scoped to, and what the stdio proxy already makes a run — so an
HTTP session has the same evidence, lease, approvals and revocation as a stdio one, and a
revocation stops that session alone (its own upstream: a child killed, or a remote session
closed) while the others go on. The proxy process lives until it is told to stop.

The SDK's ``StreamableHTTPSessionManager`` drives one shared ``Server`` for every session;
a governed session needs its own (its upstream's name, its run), opened — upstream
connected and run started — *before* the client is told the session exists. So this
module routes requests by ``Mcp-Session-Id`` to the SDK's own per-session
``StreamableHTTPServerTransport`` and serves each with :class:`ProxySession`.

Invariants:

- Only an ``initialize`` POST opens a session; its upstream and run exist before the answer,
  and a refusal (the policy, an upstream that cannot start or be reached) is the
  ``initialize`` error, naming why: nothing is spawned for any other request.
- Handshake-era sessions only: a request stamped with a sessionless (2026-07-28) protocol
  version is refused with a JSON-RPC error, which the SDK's ``auto`` clients answer by
  falling back to ``initialize``; a governed run needs a session to belong to.
- With ``loopback_only`` the Host and Origin headers must be loopback names (the SDK's
  DNS-rebinding check), before anything else happens. There is no authentication.
- Stopping ends every open session as its client's ``DELETE`` would: each run ends ``ok``.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Final
from uuid import uuid4

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import DEFAULT_SESSION_IDLE_TIMEOUT
from mcp.server.transport_security import (
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from tenure import GovernanceViolation, RunHandle

from ._session import ProxySession

__all__ = ["MAX_SESSIONS", "STOP_GRACE_S", "HttpSessions"]

#: open sessions at most (each holds an upstream: a process, or a remote session)
MAX_SESSIONS: Final = 100
#: seconds open connections have to finish once the proxy is stopping
STOP_GRACE_S: Final = 5.0
_BODY_LIMIT: Final = 4 * 1024 * 1024
_LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the proxy decides when to stop (``stop``), and
    uvicorn's would re-raise the signal after shutdown, past the runs' final records."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpSessions:
    """The ASGI app: one governed :class:`ProxySession` per MCP session."""

    def __init__(
        self,
        open_session: Callable[[], AbstractAsyncContextManager[ProxySession]],
        *,
        path: str,
        loopback_only: bool,
        on_end: Callable[[RunHandle, BaseException | None], None] | None,
        on_error: Callable[[BaseException], None] | None,
    ) -> None:
        self._open_session = open_session
        self._path = path
        self._security = TransportSecurityMiddleware(_LOOPBACK if loopback_only else None)
        self._settings = _LOOPBACK if loopback_only else None
        self._on_end = on_end
        self._on_error = on_error
        self._sessions: dict[str, StreamableHTTPServerTransport] = {}
        self._tg: TaskGroup | None = None
        self._stopping = False
        self._opening = 0

    async def serve(self, listener: socket.socket, stop: anyio.Event) -> None:
        """Serve on ``listener`` until ``stop`` is set, then end every session."""
        config = uvicorn.Config(
            RequestBodyLimitMiddleware(self._app, _BODY_LIMIT),
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=int(STOP_GRACE_S),
        )
        server = _Server(config)

        async def stop_when_asked() -> None:
            await stop.wait()
            await self._end_all()  # open GET streams end, so uvicorn can drain
            server.should_exit = True

        async with anyio.create_task_group() as self._tg:
            self._tg.start_soon(stop_when_asked)
            await server.serve(sockets=[listener])
            stop.set()  # uvicorn may also end on its own (a fatal error)
            await self._end_all()

    async def _end_all(self) -> None:
        self._stopping = True
        with anyio.CancelScope(shield=True):
            for transport in list(self._sessions.values()):
                await transport.terminate()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        refusal = await self._security.validate_request(request, is_post=request.method == "POST")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["path"] != self._path:
            await _error(404, f"Not Found: MCP is served at {self._path}")(scope, receive, send)
            return
        version = request.headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await _error(
                400,
                f"protocol version {version!r} is not served: this governing proxy serves MCP "
                "sessions (the initialize handshake), each of which is one governed run",
            )(scope, receive, send)
            return
        sid = request.headers.get(MCP_SESSION_ID_HEADER)
        if sid is not None:
            transport = self._sessions.get(sid)
            if transport is None:
                await _error(404, "Session not found")(scope, receive, send)
                return
            await transport.handle_request(scope, receive, send)
            return
        await self._open(request, scope, receive, send)

    async def _open(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        body = await request.body()
        if request.method != "POST" or not _is_initialize(body):
            await _error(400, "Bad Request: Missing session ID")(
                scope, _replay(body, receive), send
            )
            return
        if self._stopping or len(self._sessions) + self._opening >= MAX_SESSIONS:
            await _error(
                503, "the proxy is not opening sessions now (stopping, or full)", INTERNAL_ERROR
            )(scope, _replay(body, receive), send)
            return
        transport = StreamableHTTPServerTransport(
            mcp_session_id=uuid4().hex,
            security_settings=self._settings,
            idle_timeout=DEFAULT_SESSION_IDLE_TIMEOUT,
        )
        assert self._tg is not None and transport.mcp_session_id is not None
        self._opening += 1  # counted against MAX_SESSIONS while its upstream starts
        try:
            await self._tg.start(self._session, transport)
        except Exception as exc:
            why = _leaf(exc)
            if self._on_error is not None:
                self._on_error(why)
            status = 403 if isinstance(why, GovernanceViolation) else 502
            await _error(status, f"Tenure could not open this session: {_say(why)}")(
                scope, _replay(body, receive), send
            )
            return
        finally:
            self._opening -= 1
        await transport.handle_request(scope, _replay(body, receive), send)

    async def _session(
        self, transport: StreamableHTTPServerTransport, *, task_status: TaskStatus[None]
    ) -> None:
        sid = transport.mcp_session_id
        assert sid is not None
        handle: RunHandle | None = None
        try:
            async with self._open_session() as session, transport.connect() as (read, write):
                handle = session.handle
                self._sessions[sid] = transport
                task_status.started()
                if self._stopping:  # opened while the proxy began to stop
                    await transport.terminate()
                await _serve_until_idle(session, transport, read, write)
        except Exception as exc:
            if handle is None:
                raise  # the session never opened: the initialize request says why
            # One broken session (its upstream died) must not end the others.
            if self._on_error is not None:
                self._on_error(_leaf(exc))
        finally:
            self._sessions.pop(sid, None)
            if not transport.is_terminated:
                with anyio.CancelScope(shield=True):
                    await transport.terminate()
        if handle is None or self._on_end is None:
            return
        try:
            await handle.result()
        except GovernanceViolation as exc:
            self._on_end(handle, exc)
        except Exception as exc:  # not a governed stop: said, and the other sessions go on
            if self._on_error is not None:
                self._on_error(exc)
        else:
            self._on_end(handle, None)


async def _serve_until_idle(
    session: ProxySession, transport: StreamableHTTPServerTransport, read: Any, write: Any
) -> None:
    # The transport cancels its idle scope after DEFAULT_SESSION_IDLE_TIMEOUT without a
    # request in flight: the session ends as if the client had sent DELETE.
    scope = transport.idle_scope or anyio.CancelScope()
    with scope:
        await session.serve(read, write)


def _is_initialize(body: bytes) -> bool:
    try:
        message = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read given once more (the transport reads it)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, when the client goes away
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _error(status: int, message: str, code: int = INVALID_REQUEST) -> Response:
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        media_type="application/json",
    )


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _say(exc: BaseException) -> str:
    if isinstance(exc, GovernanceViolation):
        return f"{type(exc).__name__} ({exc.check}): {exc.reason}"
    return f"{type(exc).__name__}: {exc}"

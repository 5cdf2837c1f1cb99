"""An upstream MCP server reached over Streamable HTTP (``tenure mcp-proxy --upstream URL``).

There is no child process to kill: the proxy cannot stop what the remote server does once
a call reached it. What it can do, it does at once when a run stops — the governed calls in
flight are cancelled (the SDK sends ``notifications/cancelled`` upstream and the client gets
an ``is_error`` result), :meth:`Upstream.kill` closes the upstream session (``DELETE``), and
no further call is forwarded. A remote tool that ignores cancellation may still finish its
side effect: that is the limit of a server the proxy does not own.

Invariants:

- Only ``http`` / ``https`` URLs with a host are accepted (:func:`check_url`).
- The session is held by its own task, so :meth:`Upstream.kill` (synchronous, called when
  a run stops) can end it without cancelling the caller that is using it.
- Leaving :func:`connect_upstream` is bounded: :data:`CLOSE_GRACE_S` for the ``DELETE``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskStatus
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from ._upstream import Upstream

__all__ = ["CLOSE_GRACE_S", "check_url", "connect_upstream"]

#: seconds the upstream has to answer the session's ``DELETE`` when the proxy leaves
CLOSE_GRACE_S: Final = 2.0


def check_url(url: str) -> str:
    """``url`` if it is an ``http(s)://host...`` URL; ``ValueError`` saying why otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    return url


@contextlib.asynccontextmanager
async def connect_upstream(url: str) -> AsyncIterator[Upstream]:
    """Open an MCP session to the Streamable HTTP server at ``url``; an initialized
    :class:`Upstream` whose ``kill`` closes the session.

    Raises what the connection raised (``httpx2`` transport errors, an ``MCPError`` from a
    server that refused ``initialize``) before yielding.
    """
    check_url(url)
    closed = anyio.Event()
    async with anyio.create_task_group() as tg:
        upstream: Upstream = await tg.start(_hold, url, closed)
        try:
            yield upstream
        finally:
            closed.set()
            tg.cancel_scope.deadline = anyio.current_time() + CLOSE_GRACE_S


async def _hold(url: str, closed: anyio.Event, *, task_status: TaskStatus[Upstream]) -> None:
    async with (
        streamable_http_client(url) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        task_status.started(Upstream(session, init, closed.set, url))
        await closed.wait()

"""An open governed session, apart from the transport that serves it."""

from __future__ import annotations

from typing import Any

from mcp.server.lowlevel import Server

from tenure import RunHandle

__all__ = ["ProxySession"]


class ProxySession:
    """An open governed session (from :meth:`McpProxy.session`): serve it on any transport."""

    def __init__(self, handle: RunHandle, server: Server[Any]) -> None:
        self.handle = handle
        self._server = server

    async def serve(self, read: Any, write: Any) -> None:
        """Serve the session's MCP server on the SDK streams until the client closes them."""
        await self._server.run(read, write, self._server.create_initialization_options())

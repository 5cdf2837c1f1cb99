"""Govern any MCP server: a proxy that makes every ``tools/call`` a governed step.

``tenure mcp-proxy [--policy FILE] [--principal P] [--listen HOST:PORT] (-- SERVER_COMMAND
ARGS... | --upstream URL)`` is the command line; :class:`McpProxy` is the same in Python.
Clients reach it over stdio or Streamable HTTP; it reaches the server as its child over
stdio, or over Streamable HTTP. Needs the ``mcp`` extra.
"""

from .._extra import missing_extra

try:
    import mcp as _mcp  # noqa: F401
except ImportError as _exc:
    raise missing_extra("mcp", "mcp", _exc) from None

from ._proxy import AGENT_NAME, McpProxy, mcp_proxy
from ._session import ProxySession

__all__ = ["AGENT_NAME", "McpProxy", "ProxySession", "mcp_proxy"]

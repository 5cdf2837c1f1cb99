"""Govern any MCP server: a stdio proxy that makes every ``tools/call`` a governed step.

``tenure mcp-proxy [--policy FILE] [--principal P] [--scope S...] -- SERVER_COMMAND ARGS...``
is the command line; :class:`McpProxy` is the same in Python. Needs the ``mcp`` extra.
"""

from .._extra import missing_extra

try:
    import mcp as _mcp  # noqa: F401
except ImportError as _exc:
    raise missing_extra("mcp", "mcp", _exc) from None

from ._proxy import AGENT_NAME, McpProxy, mcp_proxy

__all__ = ["AGENT_NAME", "McpProxy", "mcp_proxy"]

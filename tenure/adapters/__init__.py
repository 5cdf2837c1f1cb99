"""Govern the agents people already have: one module per framework, each an optional extra.

- :mod:`tenure.adapters.mcp`: a governing stdio proxy in front of any MCP server
  (``tenure mcp-proxy``), extra ``mcp``.
- :mod:`tenure.adapters.pydantic_ai`: a capability governing every tool of a pydantic-ai
  agent, extra ``pydantic-ai``.
- :mod:`tenure.adapters.langgraph`: a governed ``ToolNode`` and an ``AgentMiddleware``,
  sync and async, extra ``langgraph``.
- :mod:`tenure.adapters.openai_agents`: governed ``FunctionTool`` s for the OpenAI Agents
  SDK, extra ``openai-agents``.
- :mod:`tenure.adapters.openai`: model calls through an OpenAI-compatible client (the
  ``openai`` package or plain httpx) as governed steps, streaming included, extra ``openai``.

Every adapter is a thin layer over the public seam: :func:`tenure.current_context`,
``Context.govern`` / ``govern_sync`` / ``model_call``. Importing :mod:`tenure` (or this
package) imports no framework; importing an adapter whose extra is missing raises one
``ModuleNotFoundError`` naming the extra.
"""

__all__: list[str] = []

"""Govern LangGraph tool calls: a governed ``ToolNode``, and an ``AgentMiddleware``.

Inside a Tenure ``@agent`` (or ``@tool``)::

    graph = builder.add_node("tools", governed_tool_node([search, delete_file])).compile()
    agent = create_agent(model, tools, middleware=[TenureMiddleware()])

Every tool call the node (or the agent) runs becomes a governed step of the Tenure step
running the graph, keyed by the tool-call id, on **both** paths: ``ainvoke`` (async wrapper)
and ``invoke`` (sync wrapper, in a worker thread: run ``graph.invoke`` with
``await anyio.to_thread.run_sync(...)``). Outside a governed step every call is refused:
a ``ToolNode`` given only the async wrapper would run denied tools unchecked under
``graph.invoke()``, so both are always given. Re-executing a node after an ``interrupt()``
replays the calls that already completed (same tool-call id) instead of running them again.

``TenureMiddleware`` also governs ``create_agent``'s model calls (``call_model`` steps,
usage from the ``AIMessage``'s ``usage_metadata``).

What the model sees: a denied tool → a ``ToolMessage`` with ``status="error"`` naming the
rule. A call that needs approval waits for Tenure's approval (``rt.approve``). A run stop
ends the graph with the violation. What it cannot govern: tools a custom node calls
directly (``tool.invoke`` outside a ``ToolNode``); a sync tool keeps running after a stop
(its result is discarded), as sync code cannot be interrupted.

Needs the ``langgraph`` extra.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from ._extra import missing_extra

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.tools import BaseTool
    from langgraph.prebuilt import ToolNode
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command
except ImportError as _exc:
    raise missing_extra("langgraph", "langgraph", _exc) from None

from tenure import Context, GovernanceViolation, current_context

__all__ = ["FRAMEWORK", "TenureMiddleware", "governed_tool_node"]

FRAMEWORK: Final = "langgraph"

_Result = ToolMessage | Command[Any]


class _Governor:
    """The one tool-call policy both wrappers (and both paths) share."""

    def __init__(self, ctx: Context | None, tool_scopes: Mapping[str, Iterable[str]] | None):
        self._ctx = ctx
        self._scopes = {k: frozenset(v) for k, v in (tool_scopes or {}).items()}

    def context(self) -> Context:
        return self._ctx if self._ctx is not None else current_context()

    async def acall(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Awaitable[_Result]]
    ) -> _Result:
        call, tctx = request.tool_call, self.context()
        try:
            return await tctx.govern(
                call["name"],
                call["args"],
                lambda: execute(request),
                call_id=call["id"],
                framework=FRAMEWORK,
                scopes=self._scopes.get(call["name"], ()),
            )
        except GovernanceViolation as exc:
            return _refused(tctx, call, exc)

    def call(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], _Result]
    ) -> _Result:
        call, tctx = request.tool_call, self.context()
        try:
            return tctx.govern_sync(
                call["name"],
                call["args"],
                lambda: execute(request),
                call_id=call["id"],
                framework=FRAMEWORK,
                scopes=self._scopes.get(call["name"], ()),
            )
        except GovernanceViolation as exc:
            return _refused(tctx, call, exc)


def _refused(tctx: Context, call: Any, exc: GovernanceViolation) -> ToolMessage:
    if tctx.stop is not None:
        raise exc  # the run stopped: the graph ends with the violation
    rule = (exc.check or "policy").removeprefix("rule:")
    return ToolMessage(
        f"Denied by Tenure ({rule}): {exc.reason}. The tool {call['name']} was not run.",
        tool_call_id=call["id"],
        name=call["name"],
        status="error",
    )


def governed_tool_node(
    tools: Sequence[BaseTool | Callable[..., Any]],
    *,
    ctx: Context | None = None,
    tool_scopes: Mapping[str, Iterable[str]] | None = None,
    **kwargs: Any,
) -> ToolNode:
    """A ``ToolNode`` whose every tool call is governed, under ``invoke`` and ``ainvoke``.

    Args:
        tools: as for ``ToolNode``.
        ctx: the Tenure step to govern under (default: :func:`tenure.current_context` at
            each call).
        tool_scopes: scopes each tool needs from the lease, by tool name.
        kwargs: passed to ``ToolNode`` (``wrap_tool_call`` / ``awrap_tool_call`` are taken).
    """
    for taken in ("wrap_tool_call", "awrap_tool_call"):
        if taken in kwargs:
            raise TypeError(f"governed_tool_node sets {taken} itself; compose in middleware")
    governor = _Governor(ctx, tool_scopes)
    return ToolNode(tools, wrap_tool_call=governor.call, awrap_tool_call=governor.acall, **kwargs)


class TenureMiddleware(AgentMiddleware[Any, Any, Any]):
    """``create_agent(..., middleware=[TenureMiddleware()])``: governs tools and model calls.

    Args:
        ctx: the Tenure step to govern under (default: the current one at each call).
        tool_scopes: scopes each tool needs from the lease, by tool name.
        govern_models: also govern model calls (``call_model`` steps with usage).
    """

    def __init__(
        self,
        ctx: Context | None = None,
        *,
        tool_scopes: Mapping[str, Iterable[str]] | None = None,
        govern_models: bool = True,
    ) -> None:
        super().__init__()
        self._governor = _Governor(ctx, tool_scopes)
        self._govern_models = govern_models

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], _Result]
    ) -> _Result:
        """The sync path (``agent.invoke`` in a worker thread)."""
        return self._governor.call(request, handler)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[_Result]],
    ) -> _Result:
        """The async path (``agent.ainvoke``)."""
        return await self._governor.acall(request, handler)

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Any]
    ) -> Any:
        """The sync path of a model call (``agent.invoke`` in a worker thread)."""
        if not self._govern_models:
            return handler(request)
        model, provider = _model_name(request.model)
        with self._governor.context().model_call(model, provider=provider) as call:
            response = handler(request)
            _record(call, response, model)
        return response

    async def awrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Awaitable[Any]]
    ) -> Any:
        """Each model call a governed ``call_model`` step, its usage recorded."""
        if not self._govern_models:
            return await handler(request)
        tctx = self._governor.context()
        model, provider = _model_name(request.model)
        async with tctx.model_call(model, provider=provider) as call:
            response = await handler(request)
            _record(call, response, model)
        return response


def _model_name(model: Any) -> tuple[str, str]:
    """(model name, provider) of a LangChain chat model, as LangSmith names them."""
    params: dict[str, Any] = {}
    ls_params = getattr(model, "_get_ls_params", None)
    if callable(ls_params):
        params = dict(ls_params())
    name = params.get("ls_model_name") or getattr(model, "model_name", None)
    name = name or getattr(model, "model", None) or type(model).__name__
    provider = params.get("ls_provider") or ""
    return str(name), str(provider)


def _record(call: Any, response: Any, model: str) -> None:
    messages: list[BaseMessage] = []
    if isinstance(response, AIMessage):
        messages = [response]
    elif isinstance(response, ModelResponse):
        messages = list(response.result)
    else:  # ExtendedModelResponse
        inner = getattr(response, "model_response", None)
        messages = list(getattr(inner, "result", []))
    inp = out = 0
    for m in messages:
        meta = getattr(m, "usage_metadata", None) or {}
        inp += int(meta.get("input_tokens", 0))
        out += int(meta.get("output_tokens", 0))
    call.record_usage(input_tokens=inp, output_tokens=out, response_model=model)

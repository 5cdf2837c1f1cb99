"""Govern an OpenAI Agents SDK agent: ``govern_agent(agent)`` inside a Tenure ``@agent``.

::

    result = await Runner.run(govern_agent(triage), "refund order 42")

``govern_agent`` clones the agent (the original is untouched) with every ``FunctionTool``
wrapped: each call becomes a governed step of the Tenure step running it, keyed by the
SDK's ``tool_call_id``, and its model wrapped so each model request is a governed
``call_model`` step with the usage the SDK reports.

What the model sees: a denied tool → the denial, with the rule, as the tool's output (the
tool never runs); a call that needs approval waits for Tenure's approval (``rt.approve``),
not the SDK's ``needs_approval``. A run stop ends ``Runner.run`` (the SDK reports it as a
``UserError`` caused by the violation) and the Tenure run ends with the violation.

What it cannot govern: hosted tools (web search, file search, code interpreter, hosted
MCP, computer use) run at the provider, and MCP servers attached to the agent are not
``FunctionTool`` s: both are refused unless named in ``unsafe_ungoverned`` (which warns
every time); put MCP servers behind ``tenure mcp-proxy`` instead. A tool whose
``failure_error_function`` turns its exception into text reports that text as a normal
result, so the evidence records it as a result.

Needs the ``openai-agents`` extra.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final

from ._extra import missing_extra

try:
    from agents import Agent, FunctionTool, Model, ModelResponse, Tool
    from agents.models.multi_provider import MultiProvider
    from agents.tool_context import ToolContext
except ImportError as _exc:
    raise missing_extra("openai_agents", "openai-agents", _exc) from None

from tenure import Context, GovernanceViolation, current_context

__all__ = ["FRAMEWORK", "GovernedModel", "govern_agent", "governed_tools"]

FRAMEWORK: Final = "openai-agents"


def _context(ctx: Context | None) -> Context:
    return ctx if ctx is not None else current_context()


def _govern_tool(tool: FunctionTool, ctx: Context | None, scopes: frozenset[str]) -> FunctionTool:
    inner = tool.on_invoke_tool

    async def on_invoke(tool_ctx: ToolContext[Any], args_json: str) -> Any:
        tctx = _context(ctx)
        try:
            args = json.loads(args_json or "{}")
        except ValueError:
            args = {"_unparsed": args_json}  # decided as sent; the tool itself rejects it
        try:
            return await tctx.govern(
                tool.name,
                args if isinstance(args, dict) else {"_value": args},
                lambda: inner(tool_ctx, args_json),
                call_id=tool_ctx.tool_call_id,
                framework=FRAMEWORK,
                scopes=scopes,
            )
        except GovernanceViolation as exc:
            if tctx.stop is not None:
                raise  # the run stopped: Runner.run ends
            rule = (exc.check or "policy").removeprefix("rule:")
            return f"Denied by Tenure ({rule}): {exc.reason}. The tool {tool.name} was not run."

    return dataclasses.replace(tool, on_invoke_tool=on_invoke)


def governed_tools(
    tools: Sequence[Tool],
    *,
    ctx: Context | None = None,
    tool_scopes: Mapping[str, Iterable[str]] | None = None,
    unsafe_ungoverned: Iterable[str] = (),
) -> list[Tool]:
    """``tools`` with every ``FunctionTool`` governed (see the module docstring).

    Args:
        ctx: the Tenure step to govern under (default: the current one at each call).
        tool_scopes: scopes each tool needs from the lease, by tool name.
        unsafe_ungoverned: names of tools that cannot be governed (hosted tools) to let
            through anyway, ungoverned; each use warns.
    """
    scopes = {k: frozenset(v) for k, v in (tool_scopes or {}).items()}
    allowed = set(unsafe_ungoverned)
    out: list[Tool] = []
    for tool in tools:
        if isinstance(tool, FunctionTool):
            out.append(_govern_tool(tool, ctx, scopes.get(tool.name, frozenset())))
            continue
        name = getattr(tool, "name", type(tool).__name__)
        if name not in allowed:
            raise TypeError(
                f"{type(tool).__name__} {name!r} runs outside this process and cannot be "
                "governed here; serve it through `tenure mcp-proxy`, drop it, or name it in "
                "unsafe_ungoverned"
            )
        warnings.warn(
            f"tool {name!r} ({type(tool).__name__}) runs UNGOVERNED: no decision, no evidence",
            stacklevel=2,
        )
        out.append(tool)
    return out


class GovernedModel(Model):
    """An Agents SDK ``Model`` whose every request is a governed ``call_model`` step.

    ``inner`` is the model, or its name (resolved by the SDK's default provider when the
    first request is made, so that building the agent needs no API key).
    """

    def __init__(
        self,
        inner: Model | str | None,
        name: str,
        *,
        provider: str = "",
        ctx: Context | None = None,
    ) -> None:
        self._inner = inner
        self.name = name
        self.provider = provider
        self._ctx = ctx

    @property
    def inner(self) -> Model:
        """The model that serves the requests."""
        if not isinstance(self._inner, Model):
            self._inner = MultiProvider().get_model(self._inner)
        return self._inner

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        """The inner model's response, decided and recorded with its usage."""
        settings = kwargs.get("model_settings", args[2] if len(args) > 2 else None)
        limit = getattr(settings, "max_tokens", None)
        tctx = _context(self._ctx)
        async with tctx.model_call(
            self.name, provider=self.provider, max_tokens=limit if type(limit) is int else None
        ) as call:
            response = await self.inner.get_response(*args, **kwargs)
            usage = response.usage
            call.record_usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        return response

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """The inner model's stream, decided first and cut at the run's stop."""
        call = _context(self._ctx).model_call(self.name, provider=self.provider)
        await call.open()
        error: BaseException | None = None
        try:
            async for event in self.inner.stream_response(*args, **kwargs):
                if call.stopped:
                    break
                usage = getattr(getattr(event, "response", None), "usage", None)
                if usage is not None:
                    call.record_usage(
                        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
                    )
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.close(error)


def _model_of(agent: Agent[Any], ctx: Context | None, name: str | None) -> GovernedModel:
    model = agent.model
    if isinstance(model, GovernedModel):
        return model
    if model is None or isinstance(model, str):
        return GovernedModel(model, name or model or "default", provider="openai", ctx=ctx)
    label = name or getattr(model, "model", None) or type(model).__name__
    provider = "openai" if type(model).__module__.startswith("agents.models.openai") else ""
    return GovernedModel(model, str(label), provider=provider, ctx=ctx)


def govern_agent(
    agent: Agent[Any],
    *,
    ctx: Context | None = None,
    tool_scopes: Mapping[str, Iterable[str]] | None = None,
    model_name: str | None = None,
    govern_model: bool = True,
    unsafe_ungoverned: Iterable[str] = (),
) -> Agent[Any]:
    """A clone of ``agent`` whose tools (and model) are governed; ``agent`` is unchanged.

    ``model_name`` names the model for the policy when the agent holds a ``Model`` object
    that does not say (default: its ``model`` attribute).
    """
    names = set(unsafe_ungoverned)
    if agent.mcp_servers and "mcp_servers" not in names:
        raise TypeError(
            f"agent {agent.name!r} has MCP servers, whose tools are not FunctionTools: serve "
            "them through `tenure mcp-proxy` (or name 'mcp_servers' in unsafe_ungoverned)"
        )
    changes: dict[str, Any] = {
        "tools": governed_tools(
            agent.tools, ctx=ctx, tool_scopes=tool_scopes, unsafe_ungoverned=names
        )
    }
    if govern_model:
        changes["model"] = _model_of(agent, ctx, model_name)
    return agent.clone(**changes)

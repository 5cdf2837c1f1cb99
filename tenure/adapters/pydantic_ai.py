"""Govern a pydantic-ai agent without changing it: ``capabilities=[tenure_capability()]``.

Inside a Tenure ``@agent`` (or ``@tool``)::

    result = await support_agent.run(prompt, capabilities=[tenure_capability()])

Every tool call of that run (function tools and MCP toolsets alike: whatever the agent's
combined toolset holds) becomes a governed step of the Tenure step running it, keyed by
pydantic-ai's tool-call id, and every model request a governed ``call_model`` step whose
usage comes from pydantic-ai's own accounting (cost from its ``genai-prices`` table when
the model is priced there).

What the model sees: a denied tool → ``ToolFailed`` with the rule (a failed tool result,
no retry budget used); a call that needs approval waits for Tenure's approval
(``rt.approve``), never pydantic-ai's ``tool_call_approved`` flag. A run stop (revocation,
expiry, budget, ...) ends the pydantic-ai run, which raises the violation.

What it cannot govern: output functions, and provider-native tools (web search, code
execution run by the provider) which never pass through a toolset.

Needs the ``pydantic-ai`` extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ._extra import missing_extra

try:
    from pydantic_ai import RunContext
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.exceptions import ToolFailed
    from pydantic_ai.messages import ModelResponse
    from pydantic_ai.models import ModelRequestContext
    from pydantic_ai.toolsets import AbstractToolset, WrapperToolset
    from pydantic_ai.toolsets.abstract import ToolsetTool
except ImportError as _exc:
    raise missing_extra("pydantic_ai", "pydantic-ai", _exc) from None

from tenure import Context, GovernanceViolation, current_context

__all__ = ["FRAMEWORK", "TenureCapability", "tenure_capability"]

FRAMEWORK: Final = "pydantic-ai"


@dataclass(init=False)
class TenureCapability(AbstractCapability[Any]):
    """The capability :func:`tenure_capability` returns (see the module docstring)."""

    context: Context | None = None
    tool_scopes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    govern_models: bool = True

    def __init__(
        self,
        context: Context | None = None,
        tool_scopes: Mapping[str, Iterable[str]] | None = None,
        govern_models: bool = True,
    ) -> None:
        self.context = context
        self.tool_scopes = {k: frozenset(v) for k, v in (tool_scopes or {}).items()}
        self.govern_models = govern_models

    def tenure_context(self) -> Context:
        """The Tenure step the calls are governed under (given, else the current one)."""
        return self.context if self.context is not None else current_context()

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        """Wrap the run's whole toolset: every tool call goes through Tenure."""
        return _GovernedToolset(toolset, capability=self)

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: Any,
    ) -> ModelResponse:
        """Send the request as a governed ``call_model`` step and record its usage."""
        if not self.govern_models:
            response: ModelResponse = await handler(request_context)
            return response
        model = request_context.model
        settings = request_context.model_settings or {}
        limit = settings.get("max_tokens")
        tctx = self.tenure_context()
        async with tctx.model_call(
            model.model_name,
            provider=model.system,
            max_tokens=limit if type(limit) is int and limit > 0 else None,
        ) as call:
            response = await handler(request_context)
            usage = response.usage
            call.record_usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost=_cost(response),
                response_model=response.model_name or model.model_name,
            )
        return response


@dataclass
class _GovernedToolset(WrapperToolset[Any]):
    capability: TenureCapability = field(default_factory=TenureCapability)

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        tctx = self.capability.tenure_context()

        async def body() -> Any:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)

        try:
            return await tctx.govern(
                name,
                tool_args,
                body,
                call_id=ctx.tool_call_id,
                framework=FRAMEWORK,
                scopes=self.capability.tool_scopes.get(name, frozenset()),
            )
        except GovernanceViolation as exc:
            if tctx.stop is not None:
                raise  # the run stopped: the pydantic-ai run ends with the violation
            rule = (exc.check or "policy").removeprefix("rule:")
            raise ToolFailed(
                f"Denied by Tenure ({rule}): {exc.reason}. The tool {name} was not run."
            ) from None


def _cost(response: ModelResponse) -> float:
    """The response's price from pydantic-ai's ``genai-prices`` table, 0 when not priced."""
    try:
        return float(response.cost().total_price)
    except (LookupError, ValueError, AssertionError):  # unknown model, or usage not reported
        return 0.0


def tenure_capability(
    ctx: Context | None = None,
    *,
    tool_scopes: Mapping[str, Iterable[str]] | None = None,
    govern_models: bool = True,
) -> TenureCapability:
    """A pydantic-ai capability that governs every tool call and model request of a run.

    Args:
        ctx: the Tenure step to govern under (default: :func:`tenure.current_context` at
            each call, so the same capability serves any agent that runs it).
        tool_scopes: scopes each tool needs from the lease, by tool name.
        govern_models: also govern model requests (``call_model`` steps with usage).
    """
    return TenureCapability(ctx, tool_scopes, govern_models)

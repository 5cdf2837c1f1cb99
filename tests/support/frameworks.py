"""Which optional frameworks (the adapters' extras) this environment has.

``make test`` installs every extra; ``make test-floors`` installs the core at its declared
floors with the test tools only (the frameworks need newer versions of pydantic and anyio
than the core does), so tests driving a framework are left out there, with the reason.
"""

from __future__ import annotations

import importlib.util

import pytest

#: top-level modules of the optional frameworks some tests drive
FRAMEWORKS = frozenset(
    {
        "agents",
        "langchain",
        "langchain_core",
        "langgraph",
        "mcp",
        "mcp_types",
        "openai",
        "pydantic_ai",
    }
)


def framework_missing(*modules: str) -> str | None:
    """Why a test needing ``modules`` cannot run here (``None``: they are installed)."""
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    return f"not installed: {', '.join(missing)}" if missing else None


def needs(module: str) -> pytest.MarkDecorator:
    """Skip the test, with the reason, when ``module`` is not installed."""
    why = framework_missing(module)
    return pytest.mark.skipif(why is not None, reason=why or "")

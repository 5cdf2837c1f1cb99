"""Packaging: importing Tenure imports no framework, and an adapter whose extra is missing
fails with one line naming the extra."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

FRAMEWORKS = ("mcp", "pydantic_ai", "langgraph", "langchain", "langchain_core", "agents", "openai")


def test_importing_tenure_and_its_cli_imports_no_framework() -> None:
    code = (
        "import sys, tenure, tenure.adapters, tenure.cli; "
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("adapter", "extra", "packages"),
    [
        ("mcp", "mcp", ("mcp",)),
        ("pydantic_ai", "pydantic-ai", ("pydantic_ai",)),
        ("langgraph", "langgraph", ("langchain", "langgraph")),
        ("openai_agents", "openai-agents", ("agents",)),
        ("openai", "openai", ("httpx",)),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, adapter: str, extra: str, packages: tuple[str, ...]
) -> None:
    """As if the extra's packages were not installed (even if another test imported them)."""
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            monkeypatch.setitem(sys.modules, name, None)
        elif name.startswith(f"tenure.adapters.{adapter}"):
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ModuleNotFoundError) as missing:
        importlib.import_module(f"tenure.adapters.{adapter}")
    message = str(missing.value)
    assert message.startswith(
        f"tenure.adapters.{adapter} needs the {extra!r} extra: pip install 'tenure[{extra}]'"
    )
    assert "\n" not in message
    assert (missing.value.name or "").split(".")[0] in packages

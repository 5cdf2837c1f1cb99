"""A LangChain `create_agent` agent governed by Tenure's middleware, async and sync.

The agent is ordinary LangChain: a chat model, two tools, plus `TenureMiddleware()`. Its
model is a scripted, offline chat model that searches the wiki and then tries to wipe it.
Tenure allows the search, denies the wipe (the model gets a `ToolMessage` with the rule and
says so), records both model calls with their token usage, and the same agent is run
through `ainvoke` and through `invoke` (in a worker thread): both paths are governed.

    .venv/bin/python examples/langgraph_agent.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool as lc_tool

from tenure import Context, Runtime, agent
from tenure.adapters.langgraph import TenureMiddleware
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "librarian-runs"
effect = "allow"
actions = ["invoke_agent"]
targets = ["librarian"]

[[rules]]
id = "search-is-fine"
effect = "allow"
actions = ["execute_tool"]
targets = ["search_wiki"]

[[rules]]
id = "never-wipe"
effect = "deny"
actions = ["execute_tool"]
targets = ["wipe_*"]

[[rules]]
id = "offline-model"
effect = "allow"
actions = ["call_model"]
targets = ["wiki-model"]
"""


class WikiModel(BaseChatModel):
    """Offline chat model: asks for both tools, then reports what the tools answered."""

    model_name: str = "wiki-model"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        usage = {"input_tokens": 20 + 10 * len(results), "output_tokens": 6, "total_tokens": 0}
        if not results:
            calls = [
                {"name": "search_wiki", "args": {"query": "leases"}, "id": "s1"},
                {"name": "wipe_wiki", "args": {}, "id": "w1"},
            ]
            reply = AIMessage("", tool_calls=calls, usage_metadata=usage)
        else:
            seen = "; ".join(f"{m.name}: {m.content} [{m.status}]" for m in results)
            reply = AIMessage(f"summary -> {seen}", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


@lc_tool
def search_wiki(query: str) -> str:
    """Search the wiki."""
    return f"3 pages about {query}"


@lc_tool
def wipe_wiki() -> str:
    """Delete every page."""
    return "wiped"


librarian_graph = create_agent(
    WikiModel(), [search_wiki, wipe_wiki], middleware=[TenureMiddleware()]
)


@agent
async def librarian(ctx: Context, question: str, sync: bool) -> str:
    """Run the LangChain agent: `ainvoke`, or `invoke` in a worker thread."""
    start: Any = {"messages": [HumanMessage(question)]}
    if sync:
        state = await anyio.to_thread.run_sync(lambda: librarian_graph.invoke(start))
    else:
        state = await librarian_graph.ainvoke(start)
    return str(state["messages"][-1].content)


async def main(evidence_dir: Path) -> None:
    public = load_public_key
    async with Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=evidence_dir) as rt:
        for sync in (False, True):
            handle = await rt.start(librarian, "what is a lease?", sync, principal="alice")
            print(f"{'invoke ' if sync else 'ainvoke'}: {await handle.result()}")
            report = verify_run(handle.evidence_path, public(default_key_dir() / "tenure.pub"))
            print(f"evidence {handle.evidence_path}: {report.verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    anyio.run(main, parser.parse_args().evidence_dir)

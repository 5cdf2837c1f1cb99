"""An agent that calls a model through the `openai` client, each call a governed step.

One line makes the client governed:
`AsyncOpenAI(http_client=httpx.AsyncClient(transport=governed_transport()))`.
With `OPENAI_BASE_URL` and `OPENAI_API_KEY` set it talks to that endpoint (model:
`OPENAI_MODEL`, default `gpt-4.1-mini`); otherwise to a scripted OpenAI-compatible server on
loopback (`examples/local_llm.py`). It asks once, streams once, is refused a model the
policy does not allow (that request is never sent), and then keeps asking until the token
budget stops the run before the request that would exceed it.

    .venv/bin/python examples/model_agent.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
from local_llm import LocalLLM
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from tenure import Context, PolicyDenied, Runtime, agent
from tenure.adapters.openai import governed_transport
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")

POLICY = f"""
version = 1
default = "deny"

[[rules]]
id = "writer-runs"
effect = "allow"
actions = ["invoke_agent"]
targets = ["writer"]

[[rules]]
id = "approved-models"
effect = "allow"
actions = ["call_model"]
targets = ["{MODEL}"]

[budgets]
max_tokens = 200
"""


@contextlib.contextmanager
def endpoint() -> Iterator[tuple[str, str]]:
    """(base URL, API key): the real endpoint if configured, else the scripted local one."""
    if os.environ.get("OPENAI_BASE_URL") and os.environ.get("OPENAI_API_KEY"):
        yield os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]
        return
    with LocalLLM(["Leases are short, signed and renewed only while policy allows."]) as llm:
        yield llm.base_url, "local"


def governed_client(base_url: str, api_key: str) -> AsyncOpenAI:
    """The user's own client, made governed by its transport (the one line)."""
    http = httpx.AsyncClient(transport=governed_transport())
    # openai 3 is typed for httpx2 clients and accepts httpx ones
    client = AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        http_client=http,  # type: ignore[arg-type]
        max_retries=0,
    )
    # The client's first use imports its resources and builds its response models: a few
    # hundred ms of blocking work on a busy machine. Done once here, before any run, so it
    # is not mistaken for an agent blocking the event loop.
    _ = client.chat.completions
    ChatCompletion.model_validate(_SAMPLE)
    ChatCompletionChunk.model_validate({**_SAMPLE, "object": "chat.completion.chunk"})
    return client


_SAMPLE = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
CLIENTS: dict[str, AsyncOpenAI] = {}


@agent
async def writer(ctx: Context, base_url: str) -> str:
    """Ask, stream, try a model that is not allowed, then spend the budget."""
    client = CLIENTS[base_url]
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "In one sentence: what is a lease?"}
    ]
    reply = await client.chat.completions.create(model=MODEL, messages=question, max_tokens=60)
    print(f"answer: {reply.choices[0].message.content}")
    stream = await client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=60, stream=True
    )
    words = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    print(f"streamed: {''.join(words)}")
    try:
        await client.chat.completions.create(model="gpt-5-pro", messages=question)
    except PolicyDenied as exc:
        print(f"refused before sending: {exc.check}: {exc.reason}")
    for n in range(1, 100):
        await client.chat.completions.create(model=MODEL, messages=question, max_tokens=60)
        print(f"call {n} sent")
    return "unreachable: the budget stops the run first"


async def main(evidence_dir: Path) -> None:
    with endpoint() as (base_url, api_key):
        CLIENTS[base_url] = governed_client(base_url, api_key)
        policy = PolicySet.from_text(POLICY)
        async with Runtime(policies=policy, evidence_dir=evidence_dir) as rt:
            handle = await rt.start(writer, base_url, principal="alice")
            try:
                await handle.result()
            except PolicyDenied as exc:
                print(f"run stopped: {exc.check}: {exc.reason}")
        await CLIENTS.pop(base_url).close()
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(f"evidence {handle.evidence_path}: {report.verdict}")
    print(f"see the model calls with: tenure trace {handle.evidence_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    anyio.run(main, parser.parse_args().evidence_dir)

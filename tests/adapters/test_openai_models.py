"""Model calls through the real ``openai`` client (and plain httpx) against a scripted
OpenAI-compatible server on loopback, governed by ``governed_transport()``."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tenure import Context, LeaseRevoked, PolicyDenied, Runtime, SigningKey, agent, tool
from tenure.adapters.openai import governed_transport
from tenure.evidence import verify_run
from tenure.policies import PolicySet

_SPEC = importlib.util.spec_from_file_location(
    "local_llm", Path(__file__).parents[2] / "examples" / "local_llm.py"
)
assert _SPEC is not None and _SPEC.loader is not None
local_llm = importlib.util.module_from_spec(_SPEC)
sys.modules["local_llm"] = local_llm
_SPEC.loader.exec_module(local_llm)

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]

[[rules]]
id = "tools"
effect = "allow"
actions = ["execute_tool"]

[[rules]]
id = "small-models"
effect = "allow"
actions = ["call_model"]
targets = ["gpt-4.1-mini"]

[budgets]
max_tokens = 40
"""


def _warm_the_client() -> None:
    """The openai client's first use imports its resources and builds its response models
    (hundreds of ms of blocking work on a busy machine): done once here, at import, not on
    a run's event loop where the stall detector would rightly call it a stall."""
    importlib.import_module("openai.resources.chat.completions")
    sample = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    ChatCompletion.model_validate(sample)
    ChatCompletionChunk.model_validate({**sample, "object": "chat.completion.chunk"})


_warm_the_client()


@pytest.fixture
def llm() -> Iterator[Any]:
    with local_llm.LocalLLM(["one two three four five"]) as server:
        yield server


def _runtime(evidence: Path, key: SigningKey) -> Runtime:
    return Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=evidence, key=key)


def _client(llm: Any) -> AsyncOpenAI:
    http = httpx.AsyncClient(transport=governed_transport(prices={"gpt-4.1-mini": (0.4, 1.6)}))
    # openai 3 is typed for httpx2 clients and accepts httpx ones (checked when constructed)
    return AsyncOpenAI(
        base_url=llm.base_url,
        api_key="local",
        http_client=http,  # type: ignore[arg-type]
        max_retries=0,
    )


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "ledger.jsonl").read_text().splitlines()]


async def test_a_chat_completion_is_a_governed_step_with_its_usage_and_cost(
    evidence: Path, key: SigningKey, llm: Any
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        async with _client(llm) as client:
            reply = await client.chat.completions.create(
                model="gpt-4.1-mini", messages=[{"role": "user", "content": "say five words"}]
            )
        return reply.choices[0].message.content or ""

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "one two three four five"
    usage = next(r for r in _records(handle.evidence_path) if r["kind"] == "usage")
    assert (usage["model"], usage["input_tokens"], usage["output_tokens"]) == (
        "gpt-4.1-mini",
        3,
        5,
    )
    assert usage["cost_micros"] == round((3 * 0.4 + 5 * 1.6) / 1e6 * 1e6)
    report = verify_run(handle.evidence_path, key.public_key)
    assert report.ok, report.failures


async def test_a_stream_is_governed_and_its_usage_chunk_recorded(
    evidence: Path, key: SigningKey, llm: Any
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        async with _client(llm) as client:
            stream = await client.chat.completions.create(
                model="gpt-4.1-mini",
                messages=[{"role": "user", "content": "stream please"}],
                stream=True,
            )
            words = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(words)

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "one two three four five"
    usage = next(r for r in _records(handle.evidence_path) if r["kind"] == "usage")
    assert (usage["input_tokens"], usage["output_tokens"]) == (2, 5)


async def test_a_denied_model_name_never_reaches_the_server(
    evidence: Path, key: SigningKey, llm: Any
) -> None:
    @agent
    async def host(ctx: Context) -> None:
        async with _client(llm) as client:
            await client.chat.completions.create(
                model="gpt-5-pro", messages=[{"role": "user", "content": "hi"}]
            )

    async with _runtime(evidence, key) as rt:
        with pytest.raises(PolicyDenied) as denied:
            await rt.run(host, principal="alice")
    assert denied.value.check == "rule:default-deny"
    assert llm.models == []  # the request was never sent


async def test_the_token_budget_stops_the_run_before_the_request_that_would_exceed_it(
    evidence: Path, key: SigningKey, llm: Any
) -> None:
    @agent
    async def host(ctx: Context) -> None:
        async with _client(llm) as client:
            for _ in range(10):  # 3 + 5 tokens each; up to 10 more asked for
                await client.chat.completions.create(
                    model="gpt-4.1-mini",
                    messages=[{"role": "user", "content": "say five words"}],
                    max_tokens=10,
                )

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        with pytest.raises(PolicyDenied) as stopped:
            await handle.result()
    assert stopped.value.check == "budget.max_tokens"
    assert len(llm.models) == 4  # 4 x 8 = 32 used; 32 + 10 > 40: the 5th was never sent
    assert "used 32 + up to 10 requested" in stopped.value.reason


async def test_plain_httpx_and_a_call_from_a_tool_body_are_governed_too(
    evidence: Path, key: SigningKey, llm: Any
) -> None:
    @tool
    async def summarize(text: str) -> str:
        async with httpx.AsyncClient(base_url=llm.base_url, transport=governed_transport()) as h:
            reply = await h.post(
                "/chat/completions",
                json={"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": text}]},
            )
        return str(reply.json()["choices"][0]["message"]["content"])

    @agent
    async def host(ctx: Context) -> str:
        out: str = await ctx.call(summarize, "a b c d")
        return out

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "one two three four five"
    recs = _records(handle.evidence_path)
    tool_step = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "summarize")
    model_step = next(r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model")
    assert model_step["parent"] == tool_step["step"]
    assert next(r for r in recs if r["kind"] == "usage")["input_tokens"] == 4


async def test_revoking_mid_stream_cuts_the_stream_and_the_run_ends_with_the_violation(
    evidence: Path, key: SigningKey
) -> None:
    with local_llm.LocalLLM([" ".join(f"w{i}" for i in range(200))]) as llm:
        seen: list[str] = []

        @agent
        async def host(ctx: Context) -> None:
            async with _client(llm) as client:
                stream = await client.chat.completions.create(
                    model="gpt-4.1-mini",
                    messages=[{"role": "user", "content": "go"}],
                    stream=True,
                )
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        seen.append(chunk.choices[0].delta.content)
                    if len(seen) == 3:
                        rt.revoke(ctx.run_id, reason="enough")

        async with _runtime(evidence, key) as rt:
            handle = await rt.start(host, principal="alice")
            with pytest.raises(LeaseRevoked):
                await handle.result()
    assert len(seen) == 3  # not one chunk after the revocation
    recs = _records(handle.evidence_path)
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_other_requests_pass_through_and_a_failed_request_is_recorded_as_an_error(
    evidence: Path, key: SigningKey, llm: Any
) -> None:
    @agent
    async def host(ctx: Context) -> list[int]:
        async with httpx.AsyncClient(base_url=llm.base_url, transport=governed_transport()) as h:
            listed = await h.get("/models")  # not a model call: passes through
            missing = await h.post("/completions", json={"model": "gpt-4.1-mini"})
            with pytest.raises(ValueError, match="names no model"):
                await h.post("/chat/completions", json={"messages": []})
        return [listed.status_code, missing.status_code]

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == [501, 404]
    recs = _records(handle.evidence_path)
    (start,) = [r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model"]
    (end,) = [r for r in recs if r["kind"] == "step.end" and r["step"] == start["step"]]
    assert end["status"] == "error" and "HTTP 404" in end["message"]

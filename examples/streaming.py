"""Streaming: an agent reads a (fake, local) model's tokens through a governed stream.

A tiny HTTP server on loopback plays the model: it streams one token per line, slowly. The
`generate` tool is an `async def` generator that reads the response with a real httpx
client and yields each token; `await ctx.call(generate, ...)` is decided and recorded
before the first token, and every token is gated. The first run reads a whole answer; in
the second the operator revokes the run mid-answer: no token arrives after the revocation,
httpx closes its connection, and the evidence shows how many tokens were delivered.

    .venv/bin/python examples/streaming.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

from tenure import Context, LeaseRevoked, Runtime, agent, tool
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "writer-may-generate"
effect = "allow"
targets = ["writer", "generate"]
"""

ANSWER = [
    "Governed",
    "execution",
    "means",
    "every",
    "step",
    "runs",
    "under",
    "a",
    "lease",
    "that",
    "can",
    "be",
    "revoked",
]


async def fake_model(stream: anyio.abc.SocketStream) -> None:
    """Answer any request with a chunked stream of tokens, one per line, 20 ms apart."""
    async with stream:
        try:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for token in ANSWER:
                line = token.encode() + b"\n"
                await stream.send(b"%x\r\n%s\r\n" % (len(line), line))
                await anyio.sleep(0.02)
            await stream.send(b"0\r\n\r\n")
        except (anyio.BrokenResourceError, anyio.EndOfStream):
            print("  model: the client closed the connection mid-answer")


@tool(scopes={"llm"})
async def generate(url: str, prompt: str) -> AsyncIterator[str]:
    """Stream the model's answer to ``prompt``, token by token."""
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("POST", url, json={"prompt": prompt}) as response,
    ):
        async for line in response.aiter_lines():
            if line:
                yield line


heard: list[str] = []
halfway = anyio.Event()


@agent(scopes={"llm"})
async def writer(ctx: Context, url: str) -> str:
    """Print the answer as it streams in."""
    heard.clear()
    stream = await ctx.call(generate, url, "what is governed execution?")
    async for token in stream:
        heard.append(token)
        print(f"  token {len(heard):2}: {token}")
        if len(heard) == 5:
            halfway.set()
    return " ".join(heard)


def stream_end(run_dir: Path) -> dict[str, Any]:
    """The ``step.end`` record of the streamed call (item count, digest, status)."""
    records = [json.loads(x) for x in (run_dir / "ledger.jsonl").read_text().splitlines()]
    return next(r for r in records if r["kind"] == "step.end" and "items" in r)


async def main(evidence_dir: Path) -> None:
    """Serve the fake model, read one whole answer, then revoke a second one midway."""
    global halfway
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    url = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}/v1"
    policy = PolicySet.from_text(POLICY, source="streaming.toml")
    async with listener, anyio.create_task_group() as server:
        server.start_soon(listener.serve, fake_model)
        async with Runtime(policies=policy, evidence_dir=evidence_dir) as rt:
            print("run 1: the whole answer")
            first = await rt.start(writer, url, principal="alice", scopes={"llm"})
            answer = await first.result()
            print(f"answer: {answer}")
            end = stream_end(first.evidence_path)
            print(f"recorded: {end['items']} tokens, status {end['status']}, {end['result']}")

            print("run 2: revoked midway")
            halfway = anyio.Event()
            second = await rt.start(writer, url, principal="alice", scopes={"llm"})
            await halfway.wait()
            rt.revoke(second.run_id, reason="operator: answer no longer needed")
            at_revoke = len(heard)
            try:
                await second.result()
            except LeaseRevoked as exc:
                print(f"run stopped fail closed: {type(exc).__name__} ({exc.check})")
            print(f"tokens after the revocation: {len(heard) - at_revoke}")
            end = stream_end(second.evidence_path)
            print(f"recorded: {end['items']} tokens delivered, status {end['status']}")
        server.cancel_scope.cancel()
    public = load_public_key(default_key_dir() / "tenure.pub")
    for handle in (first, second):
        report = verify_run(handle.evidence_path, public)
        verdict = "verified" if report.ok else f"INVALID {report.failure_line()}"
        print(f"evidence of {handle.run_id}: {verdict} (run status {report.run_status})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    anyio.run(main, parser.parse_args().evidence_dir)

"""A scripted OpenAI-compatible chat server on loopback, for running the model examples offline.

``POST /v1/chat/completions`` answers every request with the next scripted reply (JSON, or
server-sent events with ``"stream": true``), counting tokens as words, and keeps the
``model`` of every request it received. Nothing else is served. Run it alone with
``python examples/local_llm.py`` (it prints its base URL), or start it from code::

    with LocalLLM(["Hello!"]) as llm:
        client = AsyncOpenAI(base_url=llm.base_url, api_key="local")
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class LocalLLM:
    """The scripted server (a context manager; one daemon thread on 127.0.0.1)."""

    def __init__(self, replies: Sequence[str] = ("Governed hello.",)) -> None:
        self.replies = list(replies)
        self.models: list[str] = []  # the model of each request received, in order
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _next(self, request: dict[str, Any]) -> tuple[str, int]:
        with self._lock:
            self.models.append(str(request.get("model")))
            reply = self.replies[min(len(self.models), len(self.replies)) - 1]
        prompt = " ".join(str(m.get("content", "")) for m in request.get("messages", []))
        return reply, len(prompt.split())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply, prompt_tokens = llm._next(request)
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(reply.split()),
                    "total_tokens": prompt_tokens + len(reply.split()),
                }
                if request.get("stream"):
                    self._stream(request, reply, usage)
                else:
                    self._json(_completion(request["model"], reply, usage))

            def _json(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, request: dict[str, Any], reply: str, usage: dict[str, int]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                include = (request.get("stream_options") or {}).get("include_usage")
                for chunk in _chunks(request["model"], reply, usage if include else None):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                    time.sleep(0.005)
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler

    def __enter__(self) -> LocalLLM:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def _completion(model: str, reply: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _chunks(model: str, reply: str, usage: dict[str, int] | None) -> Iterator[dict[str, Any]]:
    base = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "model": model}
    for i, word in enumerate(reply.split()):
        text = word if i == 0 else " " + word
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        yield {**base, "created": int(time.time()), "choices": [choice]}
    done = {"index": 0, "delta": {}, "finish_reason": "stop"}
    yield {**base, "created": int(time.time()), "choices": [done]}
    if usage is not None:
        yield {**base, "created": int(time.time()), "choices": [], "usage": usage}


if __name__ == "__main__":
    with LocalLLM() as server:
        print(f"scripted OpenAI-compatible server at {server.base_url} (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()

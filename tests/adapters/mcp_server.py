"""A real MCP server for the proxy tests: ``python mcp_server.py MARKS_FILE`` on stdio, or
``python mcp_server.py MARKS_FILE --http URL_FILE`` over Streamable HTTP (uvicorn on a free
loopback port; its URL is written to URL_FILE once it accepts connections).

Each tool appends what it did to MARKS_FILE, so a test can see which tools actually ran
(and whether a killed ``slow`` call ever finished, or a cancelled ``wait`` was cancelled).
With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, its spans are exported there (the SDK's server
spans join the caller's trace).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
from mcp.server.mcpserver import MCPServer

MARKS = Path(sys.argv[1])
server = MCPServer("files")


def _mark(text: str) -> None:
    with MARKS.open("a") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


@server.tool()
def read_file(path: str) -> str:
    """Read a file (pretend)."""
    _mark(f"read:{path}")
    return f"contents of {path}"


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file (pretend): a side effect the policy should refuse."""
    _mark(f"deleted:{path}")
    return f"deleted {path}"


@server.tool()
def pay(amount: int) -> str:
    """Pay someone (pretend): held for approval by the policy."""
    _mark(f"paid:{amount}")
    return f"paid {amount}"


@server.tool()
def slow(seconds: float) -> str:
    """Sleep in a thread, ignoring cancellation, then record that it finished."""
    _mark(f"slow:start:{os.getpid()}")
    time.sleep(seconds)  # a blocking tool: notifications/cancelled cannot stop it
    _mark("slow:end")
    return "slow done"


@server.tool()
async def wait(seconds: float) -> str:
    """Wait without blocking; record whether the wait was cancelled (a remote stop)."""
    _mark("wait:start")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _mark("wait:cancelled")
        raise
    _mark("wait:end")
    return "waited"


async def _serve_http(url_file: Path) -> None:
    import socket

    import uvicorn

    # Listening before uvicorn starts: a client that reads the URL early waits in the
    # socket's backlog, not on a refused connection.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    tmp = url_file.with_suffix(".tmp")
    tmp.write_text(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")
    tmp.rename(url_file)
    app = server.streamable_http_app(host="127.0.0.1")
    await uvicorn.Server(uvicorn.Config(app, log_level="warning")).serve(sockets=[sock])


def _tracing() -> None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "upstream"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


if __name__ == "__main__":
    _tracing()
    if len(sys.argv) == 4 and sys.argv[2] == "--http":
        anyio.run(_serve_http, Path(sys.argv[3]))
    else:
        anyio.run(server.run_stdio_async)

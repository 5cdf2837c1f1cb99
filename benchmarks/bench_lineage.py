"""Cost of lineage (OpenTelemetry spans) per governed step.

Run: ``python -m benchmarks.bench_lineage [N_STEPS]``. ``main()`` returns the named figures
(µs, median of 5 rounds) and prints them.

A "governed step" here is what the runtime does around one delegated agent that makes one
tool call: ``start_agent`` + ``tenure.decision`` event on the parent + ``tenure.lease.issued``
event + ``set_decision`` + reading ``trace_id``/``span_id`` for the ledger records, then
``start_tool`` + ``set_decision``, and both ``end()`` calls — i.e. two spans. Configurations:

- ``light``: no provider and no exporter (the default: nothing recorded, ids only);
- ``batch_null``: SDK provider + BatchSpanProcessor + an exporter that discards (the in-band
  cost of the production pipeline; exporting runs on the processor's thread);
- ``batch_otlp_loopback``: the real OTLP/HTTP exporter posting to a local discard server
  (in-band cost including GIL contention with the export thread; spans may be dropped when
  the bounded queue is full — reported);
- ``simple_memory``: SimpleSpanProcessor + InMemorySpanExporter (synchronous, test setup);
- ``otlp_encode_us_per_span``: the OTLP protobuf encoding the export thread does per span
  (it holds the GIL, so with an exporter it adds to the run's CPU cost).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tenure.lineage._names import EVENT_DECISION, EVENT_LEASE_ISSUED
from tenure.lineage._spans import Lineage

ROUNDS = 5


class _NullExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


class _Discard(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def _steps(lin: Lineage, n: int) -> float:
    """Run ``n`` governed steps; return µs per step."""
    run = lin.start_run("bench", "root", "alice", "sha256:p", "sha256:a")
    sink: list[str] = []
    t0 = time.perf_counter_ns()
    for k in range(n):
        sid = str(k)
        run.event(EVENT_DECISION, {"target": "agent:worker", "effect": "allow", "rule": "r"})
        ag = lin.start_agent(
            run, "worker", run_id="bench", step_id=sid, lease_id="L" + sid, principal="alice"
        )
        ag.event(EVENT_LEASE_ISSUED, {"lease": "L" + sid})
        ag.set_decision("allow", "r")
        sink.append(ag.trace_id + ag.span_id)
        tl = lin.start_tool(
            ag, "search", run_id="bench", call_id=sid + "t", lease_id="L" + sid, principal="alice"
        )
        tl.set_decision("allow", "r")
        sink.append(tl.span_id)
        tl.end()
        ag.end()
    elapsed = time.perf_counter_ns() - t0
    run.end()
    return elapsed / n / 1000


def _median(fn: Any) -> float:
    return float(statistics.median(fn() for _ in range(ROUNDS)))


def main(n: int = 10_000) -> dict[str, float]:
    """Measure and print µs per governed step (2 spans) for each configuration."""
    figures: dict[str, float] = {}

    light = Lineage()
    figures["light_us_per_step"] = _median(lambda: _steps(light, n))

    null = _NullExporter()
    batch = Lineage(exporter=null)
    figures["batch_null_us_per_step"] = _median(lambda: _steps(batch, n))
    batch.shutdown(timeout_s=5)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        otlp = Lineage(otlp_endpoint=f"http://127.0.0.1:{port}")
        figures["batch_otlp_loopback_us_per_step"] = _median(lambda: _steps(otlp, n))
        otlp.shutdown(timeout_s=5)
        figures["batch_otlp_loopback_bytes_posted"] = float(_Discard.received)
    finally:
        server.shutdown()
        server.server_close()

    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    simple = Lineage(provider)

    def simple_round() -> float:
        memory.clear()
        return _steps(simple, n)

    figures["simple_memory_us_per_step"] = _median(simple_round)
    provider.shutdown()

    # What the export thread pays per span (OTLP protobuf encoding, before any I/O).
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    finished = memory.get_finished_spans()
    t0 = time.perf_counter_ns()
    encode_spans(finished).SerializePartialToString()
    figures["otlp_encode_us_per_span"] = (time.perf_counter_ns() - t0) / len(finished) / 1000

    carrier_lin = Lineage()
    h = carrier_lin.start_run("bench", "root", "alice", "", "")
    t0 = time.perf_counter_ns()
    for _ in range(n):
        carrier_lin.carrier(h)
    figures["carrier_us"] = (time.perf_counter_ns() - t0) / n / 1000

    for name, value in figures.items():
        unit = "" if name.endswith("bytes_posted") else " µs"
        print(f"{name:40s} {value:10.2f}{unit}")
    print(f"(N={n} governed steps x {ROUNDS} rounds, 2 spans per step; median)")
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)

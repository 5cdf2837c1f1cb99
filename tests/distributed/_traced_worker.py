"""``python -m tests.distributed._traced_worker SPANS WORKER-OPTIONS...``: ``tenure worker``
with an OpenTelemetry SDK pipeline of its own, exporting every ended span as one JSON line
(trace id, span id, parent span id, name) to the file SPANS. Nothing leaves the process
over the network; the test reads the file once the worker has exited."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tenure.cli import main


class FileExporter(SpanExporter):
    """Ended spans, one JSON line each."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            parent = span.parent
            line = {
                "trace": f"{context.trace_id:032x}",
                "span": f"{context.span_id:016x}",
                "parent": f"{parent.span_id:016x}" if parent is not None else "",
                "name": span.name,
            }
            self._out.write(json.dumps(line) + "\n")
        self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._out.close()


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(open(sys.argv[1], "a"))))  # noqa: SIM115
    trace.set_tracer_provider(provider)
    sys.argv = ["tenure", "worker", *sys.argv[2:]]
    main()

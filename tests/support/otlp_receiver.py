"""A tiny OTLP/HTTP trace receiver for tests (loopback only, one thread).

It accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` body (optionally
gzip-compressed), decodes it with the official ``opentelemetry-proto`` messages and keeps the
spans; anything else gets a 404/400. Use as a context manager::

    with OTLPReceiver() as rx:
        ...export to rx.endpoint ("http://127.0.0.1:<port>")...
        spans = rx.wait_for_spans(3, timeout=10)
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span with its resource and scope."""

    resource: dict[str, Any]
    scope: str
    span: Any  # opentelemetry.proto.trace.v1.trace_pb2.Span

    @property
    def trace_id(self) -> str:
        return bytes(self.span.trace_id).hex()

    @property
    def span_id(self) -> str:
        return bytes(self.span.span_id).hex()

    @property
    def parent_span_id(self) -> str:
        return bytes(self.span.parent_span_id).hex()

    @property
    def name(self) -> str:
        return str(self.span.name)

    @property
    def attributes(self) -> dict[str, Any]:
        return _kv(self.span.attributes)


def _any_value(v: Any) -> Any:
    field = v.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if field == "kvlist_value":
        return _kv(v.kvlist_value.values)
    return getattr(v, field)


def _kv(items: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in items}


class OTLPReceiver:
    """Loopback OTLP/HTTP receiver collecting decoded spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.paths: list[str] = []
        self.content_types: list[str] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.paths.append(self.path)
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception:
                    self.send_error(400)
                    return
                receiver._add(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the exporter appends ``/v1/traces``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        with self._cond:
            self.requests += 1
            for rs in request.resource_spans:
                resource = _kv(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(ReceivedSpan(resource, ss.scope.name, span))
            self._cond.notify_all()

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least ``count`` spans arrived (or the timeout); return them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.spans) >= count, timeout)
            return list(self.spans)

    def __enter__(self) -> OTLPReceiver:
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
        self._thread.join(10)

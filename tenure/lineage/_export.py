"""The span export pipeline a :class:`~._spans.Lineage` owns, and how it is stopped in time.

When the user hands over no tracer provider, spans are exported only if an endpoint or an
exporter is configured (``otlp_endpoint``, ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, or an
exporter object): then an :class:`OwnedPipeline` builds an SDK provider with a bounded
``BatchSpanProcessor`` (spans are dropped when its queue is full, never waited for).

Invariant: :meth:`OwnedPipeline.shutdown` returns within about its ``timeout_s`` however the
exporter or the collector behaves; an exporter that hangs is abandoned on a daemon thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = [
    "EXPORT_BATCH_MAX_SPANS",
    "EXPORT_QUEUE_MAX_SPANS",
    "OwnedPipeline",
    "otlp_from_config",
    "run_bounded",
    "traces_endpoint",
]

_log = logging.getLogger("tenure.lineage")

# --- export limits (safe defaults, units in the name) ----------------------------------------

DEFAULT_SERVICE_NAME: Final = "tenure"
EXPORT_QUEUE_MAX_SPANS: Final = 2048
EXPORT_BATCH_MAX_SPANS: Final = 512
EXPORT_SCHEDULE_DELAY_MS: Final = 500
EXPORT_REQUEST_TIMEOUT_S: Final = 5.0
# Time given to an interrupted exporter and processor to stop once the flush used the budget.
SHUTDOWN_GRACE_S: Final = 0.1
OTLP_TRACES_PATH: Final = "/v1/traces"

_ENV_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
_ENV_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_ENV_TIMEOUTS: Final = ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
_ENV_PROTOCOLS: Final = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
_ENV_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
_ENV_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"


class _InterruptibleExporter(SpanExporter):
    """Wraps the exporter of a provider we own so that shutdown can cut a retry short.

    The SDK's batch processor joins its worker (up to 30 s) *before* it shuts the exporter
    down, and the OTLP exporter keeps retrying an unreachable collector until its deadline;
    a bounded shutdown would otherwise leave that thread retrying after the runtime is gone.
    Shutting the wrapped exporter down first wakes the retry loop; a second shutdown, from
    the processor, is a no-op instead of the SDK's "already shutdown" warning.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        return self._inner.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._inner.shutdown()


def traces_endpoint(endpoint: str) -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/traces`` (a full URL is kept)."""
    base = endpoint.strip()
    if not base.startswith(("http://", "https://")):
        raise ValueError(
            f"otlp_endpoint must be an http:// or https:// URL, got {endpoint!r} "
            "(expected e.g. 'http://localhost:4318')"
        )
    base = base.rstrip("/")
    if base.endswith(OTLP_TRACES_PATH):
        return base
    return base + OTLP_TRACES_PATH


def otlp_from_config(otlp_endpoint: str | None) -> SpanExporter | None:
    """The OTLP/HTTP exporter ``otlp_endpoint`` or the ``OTEL_*`` variables ask for, if any."""
    if otlp_endpoint is None:
        if os.environ.get(_ENV_TRACES_EXPORTER, "").strip().lower() == "none":
            return None
        if not (os.environ.get(_ENV_TRACES_ENDPOINT) or os.environ.get(_ENV_ENDPOINT)):
            return None
    for var in _ENV_PROTOCOLS:
        if os.environ.get(var, "http/protobuf").strip().lower() == "grpc":
            _log.warning(
                "%s=grpc is not supported; exporting with OTLP/HTTP (protobuf), "
                "point the endpoint at port 4318",
                var,
            )
    # Imported lazily: requests and protobuf are only loaded when exporting.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from_env = any(os.environ.get(v) for v in _ENV_TIMEOUTS)
    timeout = None if from_env else EXPORT_REQUEST_TIMEOUT_S
    endpoint = traces_endpoint(otlp_endpoint) if otlp_endpoint is not None else None
    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


class OwnedPipeline:
    """An SDK provider built around ``exporter``, with a bounded batch processor."""

    def __init__(self, exporter: SpanExporter, service_name: str | None) -> None:
        name = service_name or os.environ.get(_ENV_SERVICE_NAME) or DEFAULT_SERVICE_NAME
        self.provider = SDKTracerProvider(
            resource=Resource.create({"service.name": name}), shutdown_on_exit=False
        )
        self._interruptible = _InterruptibleExporter(exporter)
        self.provider.add_span_processor(
            BatchSpanProcessor(
                self._interruptible,
                max_queue_size=EXPORT_QUEUE_MAX_SPANS,
                schedule_delay_millis=EXPORT_SCHEDULE_DELAY_MS,
                max_export_batch_size=EXPORT_BATCH_MAX_SPANS,
            )
        )

    def shutdown(self, timeout_s: float) -> None:
        """Flush, then stop the exporter and the provider, in about ``timeout_s`` at most."""
        provider = self.provider
        deadline = time.monotonic() + timeout_s
        millis = max(0, int(timeout_s * 1000))
        run_bounded(lambda: provider.force_flush(millis), timeout_s)
        # Whatever the flush left (a collector that is down or hanging) is dropped now,
        # rather than retried on a thread that outlives the runtime.
        for stop in (self._interruptible.shutdown, provider.shutdown):
            run_bounded(stop, max(SHUTDOWN_GRACE_S, deadline - time.monotonic()))


def run_bounded(fn: Callable[[], object], timeout_s: float) -> None:
    """Run ``fn`` on a daemon thread and wait for it ``timeout_s`` at most (errors logged)."""

    def target() -> None:
        try:
            fn()
        except Exception:  # best effort: export must never crash a run
            _log.exception("tracing shutdown failed")

    worker = threading.Thread(target=target, name="tenure-lineage-shutdown", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout_s))
    if worker.is_alive():
        _log.warning("tracing exporter did not finish within %.1f s; spans dropped", timeout_s)

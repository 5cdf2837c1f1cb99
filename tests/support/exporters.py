"""Span exporters that fail on purpose, shared by the lineage tests and the fault suite."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class RaisingExporter(SpanExporter):
    """Every export raises (a collector that is down)."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.called.set()
        raise ConnectionError("injected exporter fault: collector down")

    def shutdown(self) -> None:
        pass


class HangingExporter(SpanExporter):
    """export() blocks until ``release`` (a collector that accepts and never answers).

    ``hang_on_shutdown``: shutdown() blocks too, instead of releasing the stuck export.
    """

    def __init__(self, *, hang_on_shutdown: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._hang_on_shutdown = hang_on_shutdown

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._hang_on_shutdown:
            self.release.wait(30)
        else:
            self.release.set()

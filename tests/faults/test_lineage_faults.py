"""Lineage faults: the OpenTelemetry exporter failing, hanging or unreachable.

Lineage export is best effort: spans are queued to a bounded batch processor whose
exporter runs on its own thread, so an exporter that raises or hangs never blocks or
crashes a run; the ledger, not the trace, is the record of truth and is never best effort.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
)

from tenure import SigningKey
from tests.faults.conftest import Workflow, assert_evidence, runtime
from tests.support.exporters import HangingExporter, RaisingExporter


def _provider(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1))
    return provider


async def _complete(
    wf: Workflow,
    rt_kw: dict[str, object],
    evidence: Path,
    before_go: Callable[[], Awaitable[None]] | None = None,
    after_result: Callable[[], None] | None = None,
) -> None:
    key = SigningKey.generate()
    async with runtime(evidence, key=key, **rt_kw) as rt:
        handle = await wf.start(rt)
        if before_go is not None:
            await before_go()
        wf.go.set()
        result = await handle.result()
        if after_result is not None:
            after_result()
    assert result[:2] == ["w1", "w2"]
    assert sorted(wf.after) == ["w1:after", "w1:helper", "w2:after", "w2:helper"]
    assert_evidence(handle.evidence_path, key, check=None, status="ok")


async def test_failing_exporter_does_not_stop_or_fail_the_run(
    wf: Workflow, evidence: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Export errors are logged by the SDK and dropped; the run ends ok."""
    exporter = RaisingExporter()
    provider = _provider(exporter)

    async def exported_once() -> None:
        while exporter.calls == 0:
            await wf.run_turn()

    await _complete(wf, {"tracer_provider": provider}, evidence, exported_once)
    provider.shutdown()
    assert exporter.calls >= 1


async def test_hanging_exporter_does_not_block_the_run(wf: Workflow, evidence: Path) -> None:
    """The run goes on and ends while the exporter thread is stuck in export()."""
    exporter = HangingExporter()
    provider = _provider(exporter)

    async def hung() -> None:
        assert await anyio.to_thread.run_sync(exporter.entered.wait, 10)

    def still_hung_then_release() -> None:
        assert not exporter.release.is_set()  # the run ended while export was stuck
        exporter.release.set()  # (a still-hung exporter costs the runtime's exit <= 2 s)

    try:
        await _complete(wf, {"tracer_provider": provider}, evidence, hung, still_hung_then_release)
    finally:
        exporter.release.set()
        provider.shutdown()


async def test_unreachable_otlp_endpoint_does_not_block_the_run(
    wf: Workflow, evidence: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Runtime(otlp_endpoint=<nothing listening>): the run completes normally, and the
    runtime's exit leaves no export thread retrying the dead collector behind it."""
    before = set(threading.enumerate())
    await _complete(wf, {"otlp_endpoint": "http://127.0.0.1:9"}, evidence)
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("Otel")]
    for thread in left:
        thread.join(0.5)
    assert [t.name for t in left if t.is_alive()] == []


class RaisingProcessor(SpanProcessor):
    """A user's span processor whose hooks raise (the SDK does not catch these)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        raise RuntimeError("injected on_start fault")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("injected on_end fault")


@pytest.mark.parametrize("hook", ["on_start", "on_end"])
async def test_raising_span_processor_does_not_fail_the_run(
    hook: str,
    wf: Workflow,
    evidence: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A processor that raises while a span starts or ends: logged, the run ends ok."""
    if hook == "on_end":
        monkeypatch.setattr(RaisingProcessor, "on_start", lambda *a, **k: None)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(RaisingProcessor())
    await _complete(wf, {"tracer_provider": provider}, evidence)
    provider.shutdown()

"""Lineage spans: tree shape, GenAI/tenure attributes, errors, propagation, best-effort export."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tenure._errors import LeaseRevoked
from tenure.lineage import _names as N
from tenure.lineage._export import EXPORT_BATCH_MAX_SPANS, EXPORT_QUEUE_MAX_SPANS, traces_endpoint
from tenure.lineage._handle import STATUS_DESCRIPTION_MAX_CHARS
from tenure.lineage._spans import NOOP_SPAN, Lineage, SpanHandle
from tests.support.exporters import HangingExporter, RaisingExporter

OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_RESOURCE_ATTRIBUTES",
)
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in OTEL_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def memory() -> Iterator[tuple[Lineage, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Lineage(provider), exporter
    provider.shutdown()


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def start_run(lin: Lineage, run_id: str = "run-1") -> SpanHandle:
    return lin.start_run(run_id, "researcher", "alice", "sha256:pol", "sha256:att")


async def test_span_tree_matches_delegation_and_fan_out(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    """Explicit parents win over the ambient context, also across parallel tasks."""
    lin, exporter = memory
    run = start_run(lin)
    root = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    tool = lin.start_tool(
        root, "search", run_id="run-1", call_id="s2", lease_id="L1", principal="alice"
    )
    tool.end()
    unrelated = trace.get_tracer("other", tracer_provider=lin.tracer_provider).start_span("noise")

    async def child(i: int) -> SpanHandle:
        # Misleading ambient context: each fan-out task has some other span current.
        token = otel_context.attach(trace.set_span_in_context(unrelated))
        try:
            await asyncio.sleep(0)
            h = lin.start_agent(
                root,
                f"worker{i}",
                run_id="run-1",
                step_id=f"w{i}",
                lease_id=f"LW{i}",
                principal="alice",
            )
            await asyncio.sleep(0)
            t = lin.start_tool(
                h,
                f"fetch{i}",
                run_id="run-1",
                call_id=f"f{i}",
                lease_id=f"LW{i}",
                principal="alice",
            )
            t.end()
            h.end()
            return h
        finally:
            otel_context.detach(token)

    await asyncio.gather(*(child(i) for i in range(3)))
    root.end()
    run.end()
    unrelated.end()

    spans = by_name(exporter.get_finished_spans())
    run_s = spans["invoke_workflow researcher"]
    root_s = spans["invoke_agent planner"]
    assert run_s.parent is None
    assert parent_id(root_s) == run_s.context.span_id
    assert parent_id(spans["execute_tool search"]) == root_s.context.span_id
    for i in range(3):
        w = spans[f"invoke_agent worker{i}"]
        assert parent_id(w) == root_s.context.span_id
        assert parent_id(spans[f"execute_tool fetch{i}"]) == w.context.span_id
    tenure_spans = [s for s in spans.values() if s.name != "noise"]
    assert {s.context.trace_id for s in tenure_spans} == {run_s.context.trace_id}
    assert all(s.kind is SpanKind.INTERNAL for s in tenure_spans)


def test_gen_ai_and_tenure_attributes_are_set_at_start(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    run = start_run(lin)
    ag = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    tl = lin.start_tool(
        ag, "search", run_id="run-1", call_id="c7", lease_id="L2", principal="alice"
    )
    for h in (tl, ag, run):
        h.end()
    spans = by_name(exporter.get_finished_spans())
    assert dict(spans["invoke_workflow researcher"].attributes or {}) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "researcher",
        "tenure.run.id": "run-1",
        "tenure.principal": "alice",
        "tenure.policy.digest": "sha256:pol",
        "tenure.attestation.digest": "sha256:att",
    }
    assert dict(spans["invoke_agent planner"].attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "tenure",
        "gen_ai.agent.name": "planner",
        "gen_ai.agent.id": "planner",
        "tenure.step.id": "s1",
        "tenure.run.id": "run-1",
        "tenure.lease.id": "L1",
        "tenure.principal": "alice",
    }
    assert dict(spans["execute_tool search"].attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "search",
        "gen_ai.tool.call.id": "c7",
        "gen_ai.tool.type": "function",
        "tenure.run.id": "run-1",
        "tenure.lease.id": "L2",
        "tenure.principal": "alice",
    }


def test_handle_ids_match_the_exported_span(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    run = start_run(lin)
    run.end()
    (span,) = exporter.get_finished_spans()
    assert run.trace_id == f"{span.context.trace_id:032x}"
    assert run.span_id == f"{span.context.span_id:016x}"


def test_decision_and_governance_events_are_recorded(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    run = start_run(lin)
    ag = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    ag.set_decision("allow", "alice-runs-research")
    ag.set(N.ATTR_LEDGER_INDEX, 7)
    ag.event(N.EVENT_LEASE_ISSUED, {"tenure.lease.id": "L1"})
    ag.event(N.EVENT_LEASE_RENEWED, {"tenure.lease.id": "L1"})
    ag.event(N.EVENT_DECISION, {"tenure.decision": "allow", "tenure.rule.id": "r1"})
    ag.end()
    run.end()
    span = by_name(exporter.get_finished_spans())["invoke_agent planner"]
    attrs = span.attributes or {}
    assert attrs["tenure.decision"] == "allow"
    assert attrs["tenure.rule.id"] == "alice-runs-research"
    assert attrs["tenure.ledger.index"] == 7
    assert [e.name for e in span.events] == [
        "tenure.lease.issued",
        "tenure.lease.renewed",
        "tenure.decision",
    ]
    assert dict(span.events[2].attributes or {}) == {
        "tenure.decision": "allow",
        "tenure.rule.id": "r1",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_revoked_run_spans_end_with_error_status_and_reason(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    run = start_run(lin)
    ag = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    err = LeaseRevoked(
        "lease revoked by operator",
        run_id="run-1",
        lease_id="L1",
        check="lease.revoked",
        task="agent:planner",
        source="revoke",
    )
    ag.event(N.EVENT_VIOLATION, err.to_record())
    ag.end(err)
    run.end(err)
    spans = by_name(exporter.get_finished_spans())
    for name in ("invoke_agent planner", "invoke_workflow researcher"):
        s = spans[name]
        assert s.status.status_code is StatusCode.ERROR
        assert s.status.description == "lease revoked by operator"
        assert (s.attributes or {})["error.type"] == "tenure.LeaseRevoked"
        assert (s.attributes or {})["tenure.check"] == "lease.revoked"
    assert spans["invoke_agent planner"].events[0].name == "tenure.violation"


def test_plain_exception_sets_error_type_and_message(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    run = start_run(lin)
    run.end(KeyError("x" * 2000))
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["error.type"] == "KeyError"
    assert span.status.description is not None
    assert len(span.status.description) == STATUS_DESCRIPTION_MAX_CHARS


def test_end_is_idempotent_and_later_setters_are_ignored(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    run = start_run(lin)
    run.end()
    run.end(LeaseRevoked("late"))
    run.set("late", 1)
    run.event("late", {})
    run.set_decision("deny", "late")
    (span,) = exporter.get_finished_spans()
    assert run.ended
    assert span.status.status_code is StatusCode.UNSET
    assert "late" not in (span.attributes or {})
    assert span.events == ()


def test_run_started_inside_an_existing_span_joins_its_trace(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    outer_tracer = trace.get_tracer("app", tracer_provider=lin.tracer_provider)
    with outer_tracer.start_as_current_span("http request") as outer:
        run = start_run(lin)
    ag = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    ag.end()
    run.end()
    spans = by_name(exporter.get_finished_spans())
    outer_ctx = outer.get_span_context()
    assert parent_id(spans["invoke_workflow researcher"]) == outer_ctx.span_id
    assert spans["invoke_agent planner"].context.trace_id == outer_ctx.trace_id
    assert run.trace_id == f"{outer_ctx.trace_id:032x}"


def test_light_run_joins_an_outer_span_trace_and_keeps_its_flags() -> None:
    lin = Lineage()
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("app").start_as_current_span("outer") as outer:
        run = start_run(lin)
    ag = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    outer_ctx = outer.get_span_context()
    assert run.trace_id == ag.trace_id == f"{outer_ctx.trace_id:032x}"
    assert len({run.span_id, ag.span_id, f"{outer_ctx.span_id:016x}"}) == 3
    # sampled and random-trace-id flags come from the outer span
    assert lin.carrier(ag)["traceparent"][-2:] == f"{int(outer_ctx.trace_flags):02x}"
    provider.shutdown()


@pytest.mark.parametrize("recording", [True, False])
def test_carrier_is_a_w3c_traceparent_for_the_handle(
    recording: bool, memory: tuple[Lineage, InMemorySpanExporter]
) -> None:
    lin = memory[0] if recording else Lineage()
    run = start_run(lin)
    tl = lin.start_tool(
        run, "search", run_id="run-1", call_id="c1", lease_id="L1", principal="alice"
    )
    carrier = lin.carrier(tl)
    m = TRACEPARENT.match(carrier["traceparent"])
    assert m is not None
    assert m.group(1) == tl.trace_id == run.trace_id
    assert m.group(2) == tl.span_id != run.span_id
    assert int(m.group(3), 16) & 0x01  # sampled
    assert lin.carrier(NOOP_SPAN) == {}
    tl.end()
    run.end()


def test_no_exporter_configured_means_no_pipeline_threads_or_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without provider, endpoint or OTEL endpoint variables nothing is set up or sent."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("lineage opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    threads_before = {t.ident for t in threading.enumerate()}
    lin = Lineage()
    run = start_run(lin)
    ag = lin.start_agent(
        run, "planner", run_id="run-1", step_id="s1", lease_id="L1", principal="alice"
    )
    tl = lin.start_tool(
        ag, "search", run_id="run-1", call_id="c1", lease_id="L1", principal="alice"
    )
    ag.set_decision("allow", "r")
    ag.event(N.EVENT_LEASE_ISSUED, {})
    for h in (tl, ag, run):
        h.end()
    lin.shutdown()
    assert lin.tracer_provider is None
    assert lin.exporter is None
    assert not lin.recording
    assert not run.is_recording
    assert {t.ident for t in threading.enumerate()} == threads_before
    assert re.fullmatch(r"[0-9a-f]{32}", run.trace_id) and run.trace_id != "0" * 32
    assert re.fullmatch(r"[0-9a-f]{16}", tl.span_id) and tl.span_id != "0" * 16
    assert run.trace_id == ag.trace_id == tl.trace_id
    assert len({run.span_id, ag.span_id, tl.span_id}) == 3


def test_traces_exporter_none_disables_env_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert Lineage().exporter is None


@pytest.mark.parametrize(
    "var", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_otel_endpoint_variable_turns_on_otlp_http_export(
    var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = "http://127.0.0.1:9" + ("/v1/traces" if "TRACES" in var else "")
    monkeypatch.setenv(var, url)
    lin = Lineage()
    try:
        assert isinstance(lin.exporter, OTLPSpanExporter)
        assert lin.recording
        assert lin.exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    finally:
        lin.shutdown(timeout_s=1.0)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://localhost:4318", "http://localhost:4318/v1/traces"),
        ("http://localhost:4318/", "http://localhost:4318/v1/traces"),
        ("https://c.example/otlp/v1/traces", "https://c.example/otlp/v1/traces"),
    ],
)
def test_otlp_endpoint_argument_gets_the_traces_path(given: str, expected: str) -> None:
    assert traces_endpoint(given) == expected


def test_otlp_endpoint_without_http_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match=r"http:// or https:// URL, got 'localhost:4318'"):
        Lineage(otlp_endpoint="localhost:4318")


def test_provider_together_with_endpoint_is_a_caller_mistake() -> None:
    with pytest.raises(ValueError, match="not both"):
        Lineage(TracerProvider(shutdown_on_exit=False), otlp_endpoint="http://localhost:4318")


@pytest.mark.parametrize(
    ("param", "env", "expected"),
    [(None, None, "tenure"), (None, "from-env", "from-env"), ("given", "from-env", "given")],
)
def test_service_name_resolution(
    param: str | None, env: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is not None:
        monkeypatch.setenv("OTEL_SERVICE_NAME", env)
    lin = Lineage(service_name=param, exporter=InMemorySpanExporter())
    provider = lin.tracer_provider
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == expected
    lin.shutdown()


def test_noop_span_records_nothing_and_parents_nothing(
    memory: tuple[Lineage, InMemorySpanExporter],
) -> None:
    lin, exporter = memory
    NOOP_SPAN.set("k", 1)
    NOOP_SPAN.event("e", {})
    NOOP_SPAN.set_decision("allow", "r")
    NOOP_SPAN.end(LeaseRevoked("x"))
    assert (NOOP_SPAN.trace_id, NOOP_SPAN.span_id) == ("", "")
    orphan = lin.start_agent(NOOP_SPAN, "a", run_id="r", step_id="s", lease_id="l", principal="p")
    orphan.end()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


# --- best-effort export -------------------------------------------------------------------


def in_thread(fn: object) -> threading.Thread:
    assert callable(fn)
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def end_many(lin: Lineage, n: int) -> None:
    run = start_run(lin)
    for i in range(n):
        lin.start_tool(run, "t", run_id="r", call_id=str(i), lease_id="l", principal="p").end()
    run.end(LeaseRevoked("stop"))


def test_failing_exporter_breaks_neither_end_nor_shutdown() -> None:
    exporter = RaisingExporter()
    lin = Lineage(exporter=exporter)
    end_many(lin, 600)  # more than one batch: wakes the export thread
    assert exporter.called.wait(10)
    done = in_thread(lambda: lin.shutdown(timeout_s=0.5))
    done.join(10)
    assert not done.is_alive()
    assert exporter.calls >= 1


def test_hanging_exporter_blocks_neither_end_nor_shutdown() -> None:
    exporter = HangingExporter(hang_on_shutdown=True)
    lin = Lineage(exporter=exporter)
    try:
        end_many(lin, EXPORT_BATCH_MAX_SPANS)
        assert exporter.entered.wait(10)  # the export thread is now stuck
        # Ending spans still returns, also past the queue's capacity (spans are dropped).
        ender = in_thread(lambda: end_many(lin, EXPORT_QUEUE_MAX_SPANS + 100))
        ender.join(10)
        assert not ender.is_alive()
        closer = in_thread(lambda: lin.shutdown(timeout_s=0.2))
        closer.join(10)
        assert not closer.is_alive()
        lin.shutdown(timeout_s=0.2)  # second call: no-op
    finally:
        exporter.release.set()


def test_users_provider_is_flushed_not_shut_down() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    lin = Lineage(provider)
    start_run(lin).end()
    lin.shutdown()
    start_run(lin).end()  # the user's provider still records after our shutdown
    assert len(exporter.get_finished_spans()) == 2
    provider.shutdown()

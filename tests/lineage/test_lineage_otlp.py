"""Integration: spans exported over OTLP/HTTP to a real loopback receiver, decoded with the
official opentelemetry-proto messages, keep their parents and attributes."""

from __future__ import annotations

import pytest

from tenure._errors import LeaseRevoked
from tenure.lineage._names import EVENT_LEASE_REVOKED, EVENT_VIOLATION
from tenure.lineage._spans import Lineage
from tests.support.otlp_receiver import OTLPReceiver

STATUS_CODE_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
SPAN_KIND_INTERNAL = 1


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def run_workflow(lin: Lineage) -> None:
    """run -> planner -> (search tool, writer agent -> (fmt tool)), writer revoked."""
    run = lin.start_run("run-9", "planner", "alice", "sha256:pol", "sha256:att")
    planner = lin.start_agent(
        run, "planner", run_id="run-9", step_id="s1", lease_id="L1", principal="alice"
    )
    planner.set_decision("allow", "alice-plans")
    search = lin.start_tool(
        planner, "search", run_id="run-9", call_id="s2", lease_id="L1", principal="alice"
    )
    search.set_decision("allow", "search-ok")
    search.end()
    writer = lin.start_agent(
        planner, "writer", run_id="run-9", step_id="s3", lease_id="L2", principal="alice"
    )
    fmt = lin.start_tool(
        writer, "fmt", run_id="run-9", call_id="s4", lease_id="L2", principal="alice"
    )
    fmt.end()
    err = LeaseRevoked(
        "revoked by operator",
        run_id="run-9",
        lease_id="L2",
        check="lease.revoked",
        task="agent:writer",
        source="revoke",
    )
    writer.event(EVENT_LEASE_REVOKED, {"tenure.lease.id": "L2", "tenure.reason": err.reason})
    writer.event(EVENT_VIOLATION, err.to_record())
    writer.end(err)
    planner.end(err)
    run.end(err)


def test_spans_arrive_at_an_otlp_http_receiver_with_parents_and_attributes() -> None:
    with OTLPReceiver() as rx:
        lin = Lineage(otlp_endpoint=rx.endpoint, service_name="tenure-test")
        run_workflow(lin)
        lin.shutdown(timeout_s=10.0)  # flushes the batch
        spans = {s.name: s for s in rx.wait_for_spans(5, timeout=10)}
    assert set(rx.paths) == {"/v1/traces"}
    assert set(rx.content_types) == {"application/x-protobuf"}
    assert set(spans) == {
        "invoke_workflow planner",
        "invoke_agent planner",
        "execute_tool search",
        "invoke_agent writer",
        "execute_tool fmt",
    }
    run = spans["invoke_workflow planner"]
    planner = spans["invoke_agent planner"]
    writer = spans["invoke_agent writer"]
    assert run.parent_span_id == ""
    assert planner.parent_span_id == run.span_id
    assert spans["execute_tool search"].parent_span_id == planner.span_id
    assert writer.parent_span_id == planner.span_id
    assert spans["execute_tool fmt"].parent_span_id == writer.span_id
    assert len({s.trace_id for s in spans.values()}) == 1
    assert all(s.span.kind == SPAN_KIND_INTERNAL for s in spans.values())
    assert all(s.resource["service.name"] == "tenure-test" for s in spans.values())
    assert all(s.scope == "tenure" for s in spans.values())

    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["tenure.policy.digest"] == "sha256:pol"
    assert planner.attributes["gen_ai.agent.name"] == "planner"
    assert planner.attributes["tenure.rule.id"] == "alice-plans"
    tool = spans["execute_tool search"].attributes
    assert tool["gen_ai.tool.name"] == "search"
    assert tool["gen_ai.tool.call.id"] == "s2"
    assert tool["tenure.decision"] == "allow"
    assert writer.attributes["tenure.lease.id"] == "L2"
    assert writer.attributes["error.type"] == "tenure.LeaseRevoked"
    assert writer.span.status.code == STATUS_CODE_ERROR
    assert writer.span.status.message == "revoked by operator"
    assert [e.name for e in writer.span.events] == ["tenure.lease.revoked", "tenure.violation"]
    assert spans["execute_tool fmt"].span.status.code != STATUS_CODE_ERROR


def test_env_endpoint_exports_to_the_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        lin = Lineage()
        run = lin.start_run("run-1", "wf", "bob", "sha256:p", "sha256:a")
        run.end()
        lin.shutdown(timeout_s=10.0)
        (span,) = rx.wait_for_spans(1, timeout=10)
    assert span.resource["service.name"] == "from-env"
    assert span.trace_id == run.trace_id
    assert span.span_id == run.span_id


def test_unreachable_collector_does_not_fail_the_run() -> None:
    """Nothing listens on the port: export fails in the background, the run goes on."""
    with OTLPReceiver() as rx:
        endpoint = rx.endpoint
    lin = Lineage(otlp_endpoint=endpoint)
    run_workflow(lin)
    lin.shutdown(timeout_s=1.0)

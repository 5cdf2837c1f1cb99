"""Telemetry that follows the OpenTelemetry (GenAI) conventions.

The tracer is named with the package version and a schema URL; agent spans carry
``gen_ai.provider.name`` and an agent identity in ``gen_ai.agent.id`` (the step number under
``tenure.*``); every span-event attribute is namespaced; ``error.type`` is a fully qualified
class name; a globally configured tracer provider is used; and with the SDK disabled (or a
no-op provider) the ledger still gets valid trace and span ids.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

from tenure import Context, LeaseRevoked, Runtime, __version__, agent, tool
from tenure.lineage._names import SCHEMA_URL, error_type
from tenure.lineage._spans import Lineage
from tenure.policies import PolicySet

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@tool(scopes={"work"})
async def fetch(n: int) -> int:
    return n


@agent(scopes={"work"})
async def helper(ctx: Context, n: int) -> int:
    return int(await ctx.call(fetch, n))


@agent(scopes={"work"})
async def lead(ctx: Context) -> int:
    return int(await ctx.delegate(helper, 2))


def _ledger(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


async def test_spans_follow_the_genai_conventions_and_namespace_every_event_attribute(
    allow_all: PolicySet, evidence: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime(policies=allow_all, evidence_dir=evidence, tracer_provider=provider) as rt:
        assert await rt.run(lead, principal="alice", scopes={"work"}, ttl=30) == 2
    spans = exporter.get_finished_spans()
    for span in spans:
        scope = span.instrumentation_scope
        assert scope is not None
        assert (scope.name, scope.version, scope.schema_url) == ("tenure", __version__, SCHEMA_URL)
        for event in span.events:
            for key in event.attributes or {}:
                assert key.startswith(("tenure.", "gen_ai.")) or key == "error.type", key
    agents = {s.name: dict(s.attributes or {}) for s in spans if s.name.startswith("invoke_agent")}
    helper_attrs = agents["invoke_agent helper"]
    assert helper_attrs["gen_ai.provider.name"] == "tenure"
    assert helper_attrs["gen_ai.agent.id"] == f"{__name__}.helper"  # the same in every run
    assert helper_attrs["tenure.step.id"] != helper_attrs["gen_ai.agent.id"]
    assert agents["invoke_agent lead"]["gen_ai.agent.id"] == f"{__name__}.lead"


async def test_error_type_is_the_fully_qualified_class_name(
    allow_all: PolicySet, evidence: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    started = anyio.Event()

    @agent
    async def sleeper(ctx: Context) -> None:
        started.set()
        await anyio.sleep(30)

    async with Runtime(policies=allow_all, evidence_dir=evidence, tracer_provider=provider) as rt:
        handle = await rt.start(sleeper, principal="alice", scopes=set(), ttl=30)
        await started.wait()
        rt.revoke(handle.run_id, reason="test")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    types = {dict(s.attributes or {}).get("error.type") for s in exporter.get_finished_spans()}
    assert types == {"tenure.LeaseRevoked"}
    violations = [e for s in exporter.get_finished_spans() for e in s.events]
    assert any((e.attributes or {}).get("error.type") == "tenure.LeaseRevoked" for e in violations)
    assert error_type(ValueError()) == "ValueError"
    assert error_type(json.JSONDecodeError) == "json.decoder.JSONDecodeError"


def test_a_no_op_provider_still_gives_the_ledger_valid_ids() -> None:
    lin = Lineage(NoOpTracerProvider())
    run = lin.start_run("run-1", "wf", "alice", "sha256:p", "sha256:a")
    child = lin.start_agent(run, "a", run_id="run-1", step_id="1", lease_id="L", principal="p")
    assert HEX32.match(run.trace_id) and run.trace_id != "0" * 32
    assert HEX16.match(child.span_id) and child.span_id != run.span_id
    assert child.trace_id == run.trace_id


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import anyio
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from tenure import Context, Runtime, agent, tool
    from tenure.policies import PolicySet

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the application's global provider

    @tool(scopes={"work"})
    async def fetch(n: int) -> int:
        return n

    @agent(scopes={"work"})
    async def lead(ctx: Context) -> int:
        return await ctx.call(fetch, 1)

    async def main() -> None:
        policy = PolicySet.from_text(
            'version = 1\\ndefault = "deny"\\n[[rules]]\\nid = "all"\\neffect = "allow"\\n',
            source="p.toml",
        )
        async with Runtime(policies=policy, evidence_dir=sys.argv[1]) as rt:
            handle = await rt.start(lead, principal="alice", scopes={"work"}, ttl=30)
            await handle.result()
        print(json.dumps({
            "spans": sorted(s.name for s in exporter.get_finished_spans()),
            "run_dir": str(handle.evidence_path),
        }))

    anyio.run(main)
    """
)


def _run_script(tmp_path: Path, env_extra: dict[str, str]) -> dict[str, object]:
    script = tmp_path / "app.py"
    script.write_text(_SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "TENURE_KEY_DIR": str(tmp_path / "keys"), **env_extra}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_globally_configured_tracer_provider_is_used(tmp_path: Path) -> None:
    result = _run_script(tmp_path, {})
    assert result["spans"] == ["execute_tool fetch", "invoke_agent lead", "invoke_workflow lead"]


def test_with_the_sdk_disabled_ledger_records_still_carry_valid_ids(tmp_path: Path) -> None:
    result = _run_script(tmp_path, {"OTEL_SDK_DISABLED": "true"})
    assert result["spans"] == []  # nothing recorded: the SDK is off
    records = _ledger(Path(str(result["run_dir"])))
    traced = [r for r in records if r["kind"] != "checkpoint"]
    assert traced and all(HEX32.match(str(r["trace"])) for r in traced)
    assert all(HEX16.match(str(r["span"])) for r in traced)
    assert all(r["trace"] != "0" * 32 and r["span"] != "0" * 16 for r in traced)
    assert len({r["trace"] for r in traced}) == 1

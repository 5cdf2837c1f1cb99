"""What the adapter tests share: one policy, a runtime on it, the run's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tenure import Runtime, SigningKey
from tenure.evidence import verify_run
from tenure.policies import PolicySet

from ..support.approver import with_approver

#: every adapter test's policy: reads allowed, deletes denied, payments held for ``bob``,
#: the scripted models allowed (by name), 100 tokens for the run
POLICY = with_approver(
    """
version = 1
default = "deny"

[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]

[[rules]]
id = "reads"
effect = "allow"
actions = ["execute_tool"]
targets = ["read_*", "slow", "slow_sync", "confirm", "wait"]

[[rules]]
id = "no-delete"
effect = "deny"
actions = ["execute_tool"]
targets = ["delete_*"]

[[rules]]
id = "pay-needs-a-human"
effect = "require_approval"
actions = ["execute_tool"]
targets = ["pay"]

[[rules]]
id = "scripted-models"
effect = "allow"
actions = ["call_model"]
targets = ["scripted*"]

[budgets]
max_tokens = 100
"""
)


def runtime(evidence: Path, key: SigningKey, **kw: Any) -> Runtime:
    """A runtime on :data:`POLICY` writing to ``evidence``."""
    return Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=evidence, key=key, **kw)


def records(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ledger records, in order."""
    return [json.loads(x) for x in (run_dir / "ledger.jsonl").read_text().splitlines()]


def verified(run_dir: Path, key: SigningKey) -> None:
    """The run's evidence verifies with ``key``."""
    report = verify_run(run_dir, key.public_key)
    assert report.ok, report.failures


def recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider that keeps every finished span in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter

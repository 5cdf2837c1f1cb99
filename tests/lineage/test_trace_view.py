"""`tenure trace`: the run tree rebuilt from the ledger alone (hand-written ledgers)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from tenure.cli._trace import register
from tenure.cli._tree import print_trace
from tenure.lineage import (
    LedgerReadError,
    RunTrace,
    TraceNode,
    build_trace,
    load_trace,
    to_jaeger,
    trace_to_dict,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000


class Ledger:
    """Builds ledger records by hand (schema of CONTRACT.md), one µs clock tick per call."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.t = T0

    def add(self, kind: str, *, dt: int = 100, span: str = "", **fields: Any) -> int:
        self.t += dt
        i = len(self.records)
        self.records.append(
            {
                "i": i,
                "t": self.t,
                "kind": kind,
                "prev": "0" * 64,
                "trace": TRACE,
                "span": span,
                **fields,
            }
        )
        return i

    def start(self, run: str = "run-1", agent: str = "planner") -> None:
        self.add(
            "run.start",
            span=sid("run"),
            run=run,
            principal="alice",
            scopes=["delegate", "web:read"],
            ttl_ms=30000,
            deadline=T0 + 30_000_000,
            agent=agent,
            args="sha256:a",
            policy="sha256:p",
            attestation="sha256:t",
            key="k",
            pubkey="",
            runtime="0.1.0",
            config={},
        )

    def step(
        self,
        step: str,
        target: str,
        *,
        parent: str = "",
        lease: str = "L1",
        action: str = "invoke_agent",
        caller: str = "",
        rule: str = "allow-all",
        dt: int = 100,
    ) -> None:
        d = self.decision(step, target, lease=lease, action=action, caller=caller, rule=rule)
        self.add(
            "step.start",
            dt=dt,
            span=sid(step),
            step=step,
            lease=lease,
            action=action,
            target=target,
            decision=d,
            approval=-1,
            parent=parent,
            depth=0,
            args="sha256:x",
        )

    def decision(
        self,
        step: str,
        target: str,
        *,
        effect: str = "allow",
        rule: str = "allow-all",
        reason: str = "",
        lease: str = "L1",
        action: str = "invoke_agent",
        caller: str = "",
        span: str = "",
        args: str = "sha256:x",
    ) -> int:
        return self.add(
            "decision",
            span=span,
            step=step,
            lease=lease,
            action=action,
            target=target,
            caller=caller,
            effect=effect,
            rule=rule,
            reason=reason,
            args=args,
        )

    def violation(
        self, error: str, check: str, reason: str, *, lease: str = "", task: str = "", source: str
    ) -> int:
        return self.add(
            "violation",
            error=error,
            check=check,
            reason=reason,
            lease=lease,
            task=task,
            source=source,
        )

    def end(
        self, step: str, status: str = "ok", error: str = "", message: str = "", dt: int = 1000
    ) -> None:
        self.add(
            "step.end",
            dt=dt,
            span=sid(step),
            step=step,
            status=status,
            result="",
            error=error,
            message=message,
        )

    def run_end(
        self, status: str = "ok", error: str = "", check: str = "", reason: str = ""
    ) -> None:
        self.add(
            "run.end",
            span=sid("run"),
            status=status,
            error=error,
            check=check,
            reason=reason,
            result="",
        )

    def write(self, run_dir: Path, tail: bytes = b"") -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        body = b"".join(json.dumps(r).encode() + b"\n" for r in self.records)
        (run_dir / "ledger.jsonl").write_bytes(body + tail)
        return run_dir


def sid(name: str) -> str:
    """A stable 16-hex span id per step name."""
    return (name.encode().hex() + "0" * 16)[:16]


def names(node: TraceNode) -> list[str]:
    return [f"{c.kind}:{c.name}" for c in node.children]


def ok_ledger() -> Ledger:
    """planner -> search (tool), pay (denied tool), writer + editor (parallel agents)."""
    led = Ledger()
    led.start()
    led.add(
        "lease.issued",
        lease="L1",
        parent="",
        subject="agent:planner",
        scopes=[],
        exp=0,
        envelope={},
    )
    led.step("s1", "planner", rule="alice-plans")
    led.step("s2", "search", parent="s1", action="execute_tool", caller="planner", rule="search-ok")
    led.end("s2", dt=2500)
    led.decision(
        "s3",
        "pay",
        action="execute_tool",
        caller="planner",
        effect="deny",
        rule="no-payments",
        reason="payments are denied",
        args="sha256:y",
    )
    led.step("s4", "writer", parent="s1", lease="L2", caller="planner")
    led.step("s5", "editor", parent="s1", lease="L3", caller="planner")
    led.add("lease.renewed", lease="L1", exp=0, envelope={})
    led.add("lease.renewed", lease="L1", exp=0, envelope={})
    led.end("s5")
    led.end("s4")
    led.end("s1")
    led.run_end()
    return led


def revoked_ledger() -> Ledger:
    led = Ledger()
    led.start()
    led.step("s1", "planner")
    led.step("s2", "writer", parent="s1", lease="L2", caller="planner")
    led.step("s3", "fmt", parent="s2", lease="L2", action="execute_tool", caller="writer")
    led.end("s3")
    led.add("lease.revoked", lease="L2", reason="operator pulled access", by="ops", cascade=["L2a"])
    led.violation(
        "LeaseRevoked",
        "lease.revoked",
        "operator pulled access",
        lease="L2",
        task="agent:writer",
        source="revoke",
    )
    # As the runtime writes them: the steps the stop unwound, in one record with end times.
    led.add(
        "steps.stopped",
        error="LeaseRevoked",
        message="operator pulled access",
        steps=["s2", "s1"],
        ended=[led.t + 40, led.t + 70],
    )
    led.run_end("violation", "LeaseRevoked", "lease.revoked", "operator pulled access")
    return led


def render(tr: RunTrace) -> str:
    console = Console(record=True, width=200, color_system=None)
    print_trace(tr, console)
    return console.export_text()


# --- the tree ----------------------------------------------------------------------------


def test_tree_follows_parent_step_ids_with_timings_and_decisions() -> None:
    tr = build_trace(ok_ledger().records)
    root = tr.root
    assert (tr.run_id, tr.principal, tr.status) == ("run-1", "alice", "ok")
    assert names(root) == ["agent:planner"]
    planner = root.children[0]
    assert names(planner) == ["tool:search", "tool:pay", "agent:writer", "agent:editor"]
    search, pay, writer, editor = planner.children
    assert search.duration_us == 2500 and search.status == "ok"
    assert search.decision == {"effect": "allow", "rule": "search-ok", "reason": ""}
    assert planner.decision is not None and planner.decision["rule"] == "alice-plans"
    assert (search.trace_id, search.span_id) == (TRACE, sid("s2"))
    assert not pay.started and pay.status == "denied"
    assert pay.decision == {
        "effect": "deny",
        "rule": "no-payments",
        "reason": "payments are denied",
    }
    assert [e["kind"] for e in planner.events] == ["lease.renewed", "lease.renewed"]
    assert writer.lease == "L2" and editor.status == "ok"
    assert tr.stop_path == [] and tr.warnings == []
    assert root.duration_us == tr.root.end_us - T0 - 100  # type: ignore[operator]


def test_revoked_run_says_where_and_why_it_stopped() -> None:
    tr = build_trace(revoked_ledger().records)
    writer = tr.root.children[0].children[0]
    assert tr.status == "violation"
    assert tr.stop_path == ["run:run-1", "agent:planner", "agent:writer"]
    assert tr.stop_reason == "LeaseRevoked check=lease.revoked: operator pulled access"
    assert writer.stopped_here and writer.status == "stopped"
    assert [e["kind"] for e in writer.events] == ["lease.revoked", "violation"]
    assert writer.children[0].status == "ok"  # fmt finished before the revocation
    text = render(tr)
    assert "agent writer  stopped" in text
    assert "◀ stopped here" in text
    assert "✖ violation LeaseRevoked (check=lease.revoked, source=revoke): operator pulled" in text
    assert "⚠ lease L2 revoked by ops: operator pulled access (+1 cascaded)" in text
    assert "Ended: violation — LeaseRevoked check=lease.revoked: operator pulled access" in text
    assert "Stopped at: run:run-1 › agent:planner › agent:writer" in text


def test_steps_stopped_record_ends_each_step_at_its_own_time() -> None:
    led = revoked_ledger()
    stopped = next(r for r in led.records if r["kind"] == "steps.stopped")
    tr = build_trace(led.records)
    planner = tr.root.children[0]
    writer = planner.children[0]
    assert (writer.status, writer.error, writer.message) == (
        "stopped",
        "LeaseRevoked",
        "operator pulled access",
    )
    assert (writer.end_us, planner.end_us) == tuple(stopped["ended"])
    assert planner.status == "stopped" and tr.warnings == []


def test_malformed_steps_stopped_record_is_a_warning_not_a_crash() -> None:
    led = revoked_ledger()
    stopped = next(r for r in led.records if r["kind"] == "steps.stopped")
    stopped["ended"] = stopped["ended"][:1]
    tr = build_trace(led.records)
    assert any("malformed steps.stopped" in w for w in tr.warnings)


def test_terminal_rendering_shows_names_status_duration_and_rules() -> None:
    text = render(build_trace(ok_ledger().records))
    assert re.search(r"run run-1\s+workflow planner\s+principal alice\s+ok", text)
    assert "tool search  ok  2.5 ms  allow by search-ok" in text
    assert "tool pay  denied  deny by no-payments: payments are denied" in text
    assert "lease renewed 2×" in text
    assert "Ended: ok in" in text
    assert f"Trace id: {TRACE}" in text


def test_denied_step_lands_under_the_span_its_decision_was_recorded_on() -> None:
    """Two parallel agents of the same name: the decision's span picks the right caller."""
    led = Ledger()
    led.start()
    led.step("s1", "planner")
    led.step("s2", "writer", parent="s1", lease="L2", caller="planner")
    led.step("s3", "writer", parent="s1", lease="L3", caller="planner")
    led.decision(
        "s4",
        "rm",
        span=sid("s2"),
        lease="",
        action="execute_tool",
        caller="writer",
        effect="deny",
        rule="no-rm",
        reason="no",
        args="sha256:q",
    )
    led.decision(
        "s5",
        "rm",
        lease="",
        action="execute_tool",
        caller="writer",
        effect="deny",
        rule="no-rm",
        reason="no",
        args="sha256:q",
    )
    for s in ("s3", "s2", "s1"):
        led.end(s)
    led.run_end()
    first, second = build_trace(led.records).root.children[0].children
    assert names(first) == ["tool:rm"]  # by span
    assert names(second) == ["tool:rm"]  # no span: the latest open caller of that name


def test_violation_without_task_match_falls_back_to_lease_then_run() -> None:
    led = Ledger()
    led.start()
    led.step("s1", "planner", lease="L1")
    led.violation("LeaseExpired", "lease.expiry", "expired", lease="L1", source="watchdog")
    led.add("stall", duration_ms=1200, frame="agents.py:10 in planner")
    led.violation("GovernanceUnavailable", "watchdog", "late", source="watchdog")
    led.end("s1", status="stopped", error="LeaseExpired", message="expired")
    led.run_end("violation", "LeaseExpired", "lease.expiry", "expired")
    tr = build_trace(led.records)
    planner = tr.root.children[0]
    assert [e["kind"] for e in planner.events] == ["violation"]
    assert planner.stopped_here
    assert [e["kind"] for e in tr.root.events] == ["stall", "violation"]
    assert "⚠ event loop stalled 1200 ms in agents.py:10 in planner" in render(tr)


def test_approvals_attach_to_their_step() -> None:
    led = Ledger()
    led.start()
    led.step("s1", "planner")
    d = led.decision(
        "s2",
        "pay",
        action="execute_tool",
        caller="planner",
        effect="require_approval",
        rule="big-payments",
        args="sha256:z",
    )
    led.add(
        "approval.requested",
        request="q1",
        step="s2",
        rule="big-payments",
        action="execute_tool",
        target="pay",
        principal="alice",
    )
    g = led.add(
        "approval.granted", request="q1", step="s2", approver="bob", reason="fine", envelope={}
    )
    led.add(
        "step.start",
        span=sid("s2"),
        step="s2",
        lease="L1",
        action="execute_tool",
        target="pay",
        decision=d,
        approval=g,
        parent="s1",
        depth=1,
        args="sha256:z",
    )
    led.end("s2")
    led.decision(
        "s3",
        "pay",
        action="execute_tool",
        caller="planner",
        effect="require_approval",
        rule="big-payments",
        args="sha256:z",
    )
    led.add("approval.denied", request="q2", step="s3", approver="carol", reason="no", envelope={})
    led.end("s1")
    led.run_end()
    tr = build_trace(led.records)
    pay_ok, pay_denied = tr.root.children[0].children
    assert pay_ok.approval == {
        "status": "granted",
        "approver": "bob",
        "approver_key": "",
        "reason": "fine",
    }
    assert pay_ok.decision is not None and pay_ok.decision["effect"] == "require_approval"
    assert [e["kind"] for e in pay_ok.events] == ["approval.requested"]
    assert pay_denied.status == "approval denied" and not pay_denied.started
    text = render(tr)
    assert "approval granted by bob" in text
    assert "approval denied by carol" in text


def test_crashed_run_with_torn_last_record_is_shown_with_warnings(tmp_path: Path) -> None:
    led = Ledger()
    led.start()
    led.step("s1", "planner")
    led.step("s2", "search", parent="s1", action="execute_tool", caller="planner")
    run_dir = led.write(tmp_path / "run-1", tail=b'{"i": 5, "t": 17000')
    tr = load_trace(run_dir)
    assert tr.status == "unfinished"
    assert tr.warnings[0].startswith("line 6: torn last record ignored")
    assert any("no run.end record" in w for w in tr.warnings)
    search = tr.root.children[0].children[0]
    assert search.status == "running" and search.end_us == led.t
    assert "Ended: no run.end record" in render(tr)


def test_unknown_parent_is_shown_under_the_run_with_a_warning() -> None:
    led = Ledger()
    led.start()
    led.step("s9", "orphan", parent="missing")
    led.run_end()
    tr = build_trace(led.records)
    assert names(tr.root) == ["agent:orphan"]
    assert "unknown parent 'missing'" in tr.warnings[0]


# --- untrusted input ---------------------------------------------------------------------


def test_malformed_middle_record_is_refused_with_file_and_line(tmp_path: Path) -> None:
    run_dir = ok_ledger().write(tmp_path / "r")
    lines = (run_dir / "ledger.jsonl").read_bytes().split(b"\n")
    lines[2] = b"{not json"
    (run_dir / "ledger.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(LedgerReadError, match=r"ledger\.jsonl:3: not a JSON record"):
        load_trace(run_dir)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"i": 0, "kind": "run.start", "t": "soon"}', r":1: field 't': expected an integer"),
        ('{"i": 0, "kind": 7, "t": 1}', r":1: field 'kind': missing or not a string"),
        ("[1, 2]", r":1: expected a JSON object, got list"),
    ],
)
def test_record_with_wrong_field_type_is_refused(record: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "ledger.jsonl").write_text(record + "\n")
    with pytest.raises(LedgerReadError, match=message):
        load_trace(tmp_path)


def test_terminal_escape_and_markup_in_ledger_names_are_neutralised() -> None:
    """An agent name carrying ANSI escapes or rich markup is shown inert."""
    led = Ledger()
    led.start(agent="x\x1b[2J[bold red]owned[/]")
    led.step("s1", "evil\x1b]0;title\x07[link=http://x]y[/link]")
    led.end("s1", status="error", error="ValueError", message="\x1b[31mred\r\nforged line")
    led.run_end("error", "ValueError", "", "boom")
    tr = build_trace(led.records)
    console = Console(record=True, width=300, color_system="truecolor", force_terminal=True)
    print_trace(tr, console)
    raw = console.export_text(styles=False)
    assert "\x1b" not in raw and "\x07" not in raw and "\r" not in raw
    assert "[bold red]owned[/]" in raw  # printed literally, not interpreted
    assert "\\x1b[31mred\\x0d\\x0aforged line" in raw
    assert tr.root.children[0].name.startswith("evil\\x1b]0;title\\x07")


# --- JSON and Jaeger ---------------------------------------------------------------------


def test_json_output_is_the_tree() -> None:
    data = json.loads(json.dumps(trace_to_dict(build_trace(revoked_ledger().records))))
    assert data["status"] == "violation"
    assert data["stop"]["path"][-1] == "agent:writer"
    planner = data["tree"]["children"][0]
    assert planner["name"] == "planner"
    assert planner["children"][0]["stopped_here"] is True
    assert planner["children"][0]["children"][0]["duration_us"] == 1000


def test_jaeger_json_has_the_ledger_ids_and_parent_references() -> None:
    doc = to_jaeger(build_trace(ok_ledger().records))
    json.dumps(doc)
    (tr,) = doc["data"]
    assert tr["traceID"] == TRACE
    spans = {s["operationName"]: s for s in tr["spans"]}
    assert set(spans) == {
        "invoke_workflow planner",
        "invoke_agent planner",
        "execute_tool search",
        "invoke_agent writer",
        "invoke_agent editor",
    }
    ids = {s["spanID"] for s in tr["spans"]}
    for s in tr["spans"]:
        assert re.fullmatch(r"[0-9a-f]{16}", s["spanID"]) and s["traceID"] == TRACE
        assert s["processID"] in tr["processes"]
        assert all(ref["spanID"] in ids and ref["refType"] == "CHILD_OF" for ref in s["references"])
        assert {"key", "type", "value"} >= set(s["tags"][0])
    assert spans["invoke_workflow planner"]["references"] == []
    assert spans["invoke_agent planner"]["spanID"] == sid("s1")
    assert spans["execute_tool search"]["references"][0]["spanID"] == sid("s1")
    assert spans["execute_tool search"]["duration"] == 2500
    tags = {t["key"]: t["value"] for t in spans["execute_tool search"]["tags"]}
    assert tags["gen_ai.tool.name"] == "search" and tags["tenure.rule.id"] == "search-ok"
    assert tags["gen_ai.operation.name"] == "execute_tool"
    denied = [
        log
        for log in spans["invoke_agent planner"]["logs"]
        if {"key": "effect", "type": "string", "value": "deny"} in log["fields"]
    ]
    assert len(denied) == 1


def test_jaeger_marks_stopped_spans_as_errors() -> None:
    (tr,) = to_jaeger(build_trace(revoked_ledger().records))["data"]
    spans = {s["operationName"]: s for s in tr["spans"]}
    tags = {t["key"]: t["value"] for t in spans["invoke_agent writer"]["tags"]}
    assert tags["error"] is True and tags["error.type"] == "LeaseRevoked"
    assert tags["otel.status_description"] == "operator pulled access"
    events = [
        f["value"]
        for log in spans["invoke_agent writer"]["logs"]
        for f in log["fields"]
        if f["key"] == "event"
    ]
    assert events == ["tenure.lease.revoked", "tenure.violation"]
    fmt_tags = {t["key"] for t in spans["execute_tool fmt"]["tags"]}
    assert "error" not in fmt_tags


def test_jaeger_derives_stable_ids_when_records_have_none() -> None:
    led = ok_ledger()
    for r in led.records:
        r["trace"] = r["span"] = ""
    a = to_jaeger(build_trace(led.records))
    b = to_jaeger(build_trace(led.records))
    assert a == b
    (tr,) = a["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", tr["traceID"])
    assert len({s["spanID"] for s in tr["spans"]}) == len(tr["spans"]) == 5


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """tenure (test root)."""

    register(app)
    return app


def test_cli_prints_the_tree(cli: typer.Typer, tmp_path: Path) -> None:
    run_dir = revoked_ledger().write(tmp_path / "run-1")
    res = CliRunner().invoke(cli, ["trace", str(run_dir)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "agent writer  stopped" in res.stdout
    assert "Stopped at: run:run-1 › agent:planner › agent:writer" in res.stdout


def test_cli_json_and_jaeger_outputs(cli: typer.Typer, tmp_path: Path) -> None:
    run_dir = ok_ledger().write(tmp_path / "run-1")
    out = tmp_path / "jaeger.json"
    res = CliRunner().invoke(cli, ["trace", str(run_dir), "--json", "--jaeger", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tree"]["children"][0]["name"] == "planner"
    assert json.loads(out.read_text())["data"][0]["traceID"] == TRACE
    assert f"wrote Jaeger JSON to {out}" in res.stderr


def test_cli_missing_run_dir_exits_2_and_a_dir_without_ledger_exits_1(
    cli: typer.Typer, tmp_path: Path
) -> None:
    res = CliRunner().invoke(cli, ["trace", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: ") and "no such run directory" in res.stderr
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["trace", str(tmp_path / "empty")])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: no ledger at ")


def test_policy_denial_stops_at_the_refused_step() -> None:
    """The violation of a denied tool call points at the tool that was refused."""
    led = Ledger()
    led.start()
    led.step("s1", "planner")
    led.decision(
        "s2",
        "pay",
        span=sid("s1"),
        action="execute_tool",
        caller="planner",
        effect="deny",
        rule="default-deny",
        reason="no rule matched",
        args="sha256:q",
    )
    led.end("s1", status="error", error="PolicyDenied", message="tool:pay denied")
    led.violation(
        "PolicyDenied",
        "rule:default-deny",
        "tool:pay denied",
        lease="L1",
        task="tool:pay",
        source="policy",
    )
    led.run_end("violation", "PolicyDenied", "rule:default-deny", "tool:pay denied")
    tr = build_trace(led.records)
    pay = tr.root.children[0].children[0]
    assert pay.stopped_here and pay.status == "denied"
    assert tr.stop_path == ["run:run-1", "agent:planner", "tool:pay"]

"""Edges of the foreign-call seam: bad input refused before anything is recorded, the sync
path's replay and errors, outcomes kept per call id (and forgotten in order), a body that
ignores the stop, a model call cut by the stop, and usage that does not add up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenure import Context, LeaseRevoked, PolicyDenied, Runtime, SigningKey, agent
from tenure.policies import PolicySet
from tenure.runtime.kernel import _foreign
from tests.support.evidence import decisions

ALLOW = """
version = 1
default = "deny"

[[rules]]
id = "all"
effect = "allow"

[[rules]]
id = "no-delete"
effect = "deny"
targets = ["delete"]
"""


def _runtime(evidence: Path, key: SigningKey, **kw: Any) -> Runtime:
    return Runtime(policies=PolicySet.from_text(ALLOW), evidence_dir=evidence, key=key, **kw)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "ledger.jsonl").read_text().splitlines()]


async def _nothing() -> None:
    return None


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda ctx: ctx.govern("", {}, _nothing), ValueError, "non-empty name"),
        (lambda ctx: ctx.govern("t", {}, _nothing, call_id=""), ValueError, "call_id"),
        (lambda ctx: ctx.govern("t", {}, _nothing, scopes="s"), TypeError, "single string"),
    ],
    ids=["empty-name", "empty-call-id", "scopes-as-a-string"],
)
async def test_a_malformed_governed_call_is_refused_before_any_record(
    evidence: Path, key: SigningKey, call: Any, error: type[Exception], match: str
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        with pytest.raises(error, match=match):
            await call(ctx)
        return "refused"

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "refused"
    assert [d["target"] for d in decisions(_records(handle.evidence_path))] == ["host"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": ""}, ValueError),
        ({"model": "m", "provider": 3}, TypeError),
        ({"model": "m", "max_tokens": 0}, ValueError),
        ({"model": "m", "max_tokens": True}, ValueError),
    ],
    ids=["no-model", "provider-not-str", "max-tokens-zero", "max-tokens-bool"],
)
async def test_a_malformed_model_call_is_refused(
    evidence: Path, key: SigningKey, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        model = kwargs.pop("model")
        with pytest.raises(error):
            ctx.model_call(model, **kwargs)
        return "refused"

    async with _runtime(evidence, key) as rt:
        assert await rt.run(host, principal="alice") == "refused"


async def test_usage_must_add_up_and_be_reported_on_an_open_call(
    evidence: Path, key: SigningKey
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        with pytest.raises(ValueError, match="less than input_tokens"):
            ctx.record_usage(3, input_tokens=2, output_tokens=2)
        with pytest.raises(TypeError, match="model must be a str"):
            ctx.record_usage(1, model=b"m")  # type: ignore[arg-type]
        call = ctx.model_call("m")
        with pytest.raises(RuntimeError, match="before the model call was opened"):
            call.record_usage(input_tokens=1)
        call.close()  # closing a call never opened records nothing
        ctx.record_usage(5, 0.25, model="m", input_tokens=2, output_tokens=3)
        return "ok"

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "ok"
    (usage,) = [r for r in _records(handle.evidence_path) if r["kind"] == "usage"]
    assert (usage["tokens"], usage["cost_micros"], usage["model"]) == (5, 250000, "m")


async def test_the_sync_path_replays_a_call_id_and_records_a_body_that_raised(
    evidence: Path, key: SigningKey
) -> None:
    def worker(ctx: Context) -> list[Any]:
        first = ctx.govern_sync("t", {}, lambda: "once", call_id="x")
        again = ctx.govern_sync("t", {}, lambda: "twice", call_id="x")

        def boom() -> str:
            raise KeyError("lost")

        with pytest.raises(KeyError):
            ctx.govern_sync("t", {}, boom, call_id="y")
        return [first, again]

    @agent
    async def host(ctx: Context) -> list[Any]:
        with pytest.raises(RuntimeError, match=r"`async with ctx\.model_call"), ctx.model_call("m"):
            pass
        out: list[Any] = await anyio.to_thread.run_sync(worker, ctx)
        return out

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == ["once", "once"]
    ends = [r for r in _records(handle.evidence_path) if r["kind"] == "step.end"]
    assert [e["status"] for e in ends if e["status"] == "error"] == ["error"]


async def test_a_model_call_from_a_worker_thread_records_its_usage(
    evidence: Path, key: SigningKey
) -> None:
    def worker(ctx: Context) -> None:
        with ctx.model_call("m", provider="p") as call:
            call.record_usage(input_tokens=4, output_tokens=1)

    @agent
    async def host(ctx: Context) -> None:
        await anyio.to_thread.run_sync(worker, ctx)

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        await handle.result()
    (usage,) = [r for r in _records(handle.evidence_path) if r["kind"] == "usage"]
    assert (usage["provider"], usage["tokens"]) == ("p", 5)


async def test_outcomes_are_kept_for_the_last_ids_and_an_older_id_is_never_run_again(
    evidence: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_foreign, "KEPT_OUTCOMES", 2)
    runs: list[str] = []

    def body(tag: str) -> Any:
        async def run() -> str:
            runs.append(tag)
            return tag

        return run

    @agent
    async def host(ctx: Context) -> str:
        for tag in ("a", "b", "c"):
            await ctx.govern("t", {}, body(tag), call_id=tag)
        assert await ctx.govern("t", {}, body("c2"), call_id="c") == "c"  # kept
        with pytest.raises(RuntimeError, match="no longer kept"):
            await ctx.govern("t", {}, body("a2"), call_id="a")
        return "done"

    async with _runtime(evidence, key) as rt:
        assert await rt.run(host, principal="alice") == "done"
    assert runs == ["a", "b", "c"]


async def test_a_foreign_body_that_ignores_the_stop_is_recorded_abandoned(
    evidence: Path, key: SigningKey
) -> None:
    """It runs in a task the run does not own and swallows the cancellation: the run ends
    after its cleanup grace anyway, the step is recorded abandoned, and nothing is written
    for it when it finally returns."""
    started, release, done = anyio.Event(), anyio.Event(), anyio.Event()
    contexts: list[Context] = []
    seen: list[BaseException] = []

    async def stubborn() -> str:
        started.set()
        with anyio.CancelScope(shield=True):
            await release.wait()
        return "late"

    @agent
    async def host(ctx: Context) -> None:
        contexts.append(ctx)
        await anyio.sleep(30)

    async def outside() -> None:
        try:
            await contexts[0].govern("slow", {}, stubborn)
        except BaseException as exc:
            seen.append(exc)
        done.set()

    async with _runtime(evidence, key, cleanup_grace=0.2) as rt:
        handle = await rt.start(host, principal="alice")
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                while not contexts:  # noqa: ASYNC110 (the agent publishes its context)
                    await anyio.sleep(0.01)
                tg.start_soon(outside)
                await started.wait()
                rt.revoke(handle.run_id, reason="stop")
                with pytest.raises(LeaseRevoked):
                    await handle.result()
                release.set()
                await done.wait()
    assert len(seen) == 1 and isinstance(seen[0], LeaseRevoked)
    recs = _records(handle.evidence_path)
    stopped = [r for r in recs if r["kind"] == "steps.stopped" and r["outcome"] == "abandoned"]
    assert stopped, "the stubborn call was not recorded abandoned"


async def test_a_model_call_cut_by_the_stop_raises_the_violation(
    evidence: Path, key: SigningKey
) -> None:
    started = anyio.Event()
    contexts: list[Context] = []
    seen: list[BaseException] = []

    @agent
    async def host(ctx: Context) -> None:
        contexts.append(ctx)
        await anyio.sleep(30)

    async def outside() -> None:
        try:
            async with contexts[0].model_call("m"):
                started.set()
                await anyio.sleep(30)
        except BaseException as exc:
            seen.append(exc)

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                while not contexts:  # noqa: ASYNC110 (the agent publishes its context)
                    await anyio.sleep(0.01)
                tg.start_soon(outside)
                await started.wait()
                rt.revoke(handle.run_id, reason="stop")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert len(seen) == 1 and isinstance(seen[0], LeaseRevoked)


async def test_a_denied_call_inside_a_stopped_run_raises_the_stop(
    evidence: Path, key: SigningKey
) -> None:
    @agent
    async def host(ctx: Context) -> None:
        with pytest.raises(PolicyDenied):
            await ctx.govern("delete", {}, _nothing)
        assert ctx.stop is None
        ctx.record_usage(1)

    async with _runtime(evidence, key) as rt:
        await rt.run(host, principal="alice")


async def test_tenure_trace_shows_foreign_calls_model_calls_and_the_usage_totals(
    evidence: Path, key: SigningKey
) -> None:
    import sys

    from tenure.lineage import load_trace, to_jaeger, trace_to_dict

    async def body() -> str:
        return "ok"

    @agent
    async def host(ctx: Context) -> None:
        await ctx.govern("lookup", {"q": 1}, body, call_id="c-1", framework="fw")
        async with ctx.model_call("m-1", provider="p") as call:
            call.record_usage(input_tokens=3, output_tokens=2, cost=0.5)
        ctx.record_usage(4)

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        await handle.result()
    tr = load_trace(handle.evidence_path)
    assert (tr.model_calls, tr.usage["tokens"], tr.usage["cost_micros"]) == (1, 9, 500000)
    data = trace_to_dict(tr)
    assert data["usage"]["model_calls"] == 1
    model = next(n for n in tr.root.walk() if n.kind == "model")
    assert (model.name, model.usage_model, model.usage) == (
        "m-1",
        "m-1",
        {"tokens": 5, "input_tokens": 3, "output_tokens": 2, "cost_micros": 500000},
    )
    assert any(s["operationName"] == "chat m-1" for s in to_jaeger(tr)["data"][0]["spans"])
    tenure_cli = str(Path(sys.executable).with_name("tenure"))
    done = await anyio.run_process(
        [tenure_cli, "trace", str(handle.evidence_path)],
        env={"NO_COLOR": "1", "COLUMNS": "200", "PATH": ""},
    )
    shown = done.stdout.decode()
    assert "tool lookup  via fw (c-1)" in shown
    assert "model m-1  via p" in shown and "5 tokens (3 in, 2 out), cost 0.5" in shown
    assert "Usage: 1 model call, 9 tokens (3 in, 2 out), cost 0.5" in shown


def test_a_usage_record_with_bad_counts_is_not_counted() -> None:
    from tenure.lineage import build_trace

    records = [
        {"i": 0, "t": 1, "kind": "run.start", "run": "r", "agent": "a", "principal": "p"},
        {"i": 1, "t": 2, "kind": "usage", "step": "1", "tokens": -5, "cost_micros": 0},
        {"i": 2, "t": 3, "kind": "usage", "step": "9", "tokens": 2, "cost_micros": 1},
    ]
    tr = build_trace(records)
    assert tr.usage["tokens"] == 2
    assert any("usage with bad counts" in w for w in tr.warnings)

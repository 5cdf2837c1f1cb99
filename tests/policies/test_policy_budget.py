"""Budgets and rate limits: each limit refuses the step that crosses it, naming limit and value."""

from __future__ import annotations

import pytest

from tenure.policies import Budgets, BudgetTracker, PolicySet


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracker(
    rate_limits: dict[str, tuple[int, float]] | None = None, **budgets: float
) -> tuple[BudgetTracker, FakeClock]:
    clock = FakeClock()
    return BudgetTracker(Budgets(**budgets), rate_limits or {}, clock=clock), clock


def test_max_steps_refuses_the_step_past_the_limit() -> None:
    t, _ = tracker(max_steps=3)
    assert t.on_step("invoke_agent", "planner", 0) is None
    assert t.on_step("execute_tool", "search", 1) is None
    assert t.on_step("invoke_agent", "writer", 1) is None
    assert t.on_step("invoke_agent", "writer", 1) == (
        "budget.max_steps",
        "run exceeded max_steps=3 (step 4 of agent:writer)",
    )


def test_max_tool_calls_counts_only_tools() -> None:
    t, _ = tracker(max_tool_calls=1)
    assert t.on_step("invoke_agent", "a", 0) is None
    assert t.on_step("execute_tool", "search", 1) is None
    assert t.on_step("invoke_agent", "b", 1) is None
    assert t.on_step("execute_tool", "fetch", 1) == (
        "budget.max_tool_calls",
        "run exceeded max_tool_calls=1 (tool call 2 of tool:fetch)",
    )
    assert (t.steps, t.tool_calls) == (4, 2)


def test_max_depth_refuses_deeper_steps() -> None:
    t, _ = tracker(max_depth=2)
    assert t.on_step("invoke_agent", "a", 2) is None
    assert t.on_step("invoke_agent", "deep", 3) == (
        "budget.max_depth",
        "run exceeded max_depth=2 (depth 3 of agent:deep)",
    )


def test_max_concurrency_refuses_and_does_not_count_the_extra_task() -> None:
    t, _ = tracker(max_concurrency=2)
    assert t.enter() is None
    assert t.enter() is None
    assert t.enter() == (
        "budget.max_concurrency",
        "run exceeded max_concurrency=2 (3 live governed tasks)",
    )
    assert t.live == 2
    t.leave()
    assert t.enter() is None


def test_leave_without_enter_is_a_caller_error() -> None:
    t, _ = tracker()
    with pytest.raises(RuntimeError, match="without a matching enter"):
        t.leave()


def test_max_tokens_and_max_cost() -> None:
    t, _ = tracker(max_tokens=100, max_cost=0.5)
    assert t.record_usage(60, 0.25) is None
    assert t.record_usage(50, 0.0) == (
        "budget.max_tokens",
        "run exceeded max_tokens=100 (used 110)",
    )
    t2, _ = tracker(max_cost=0.5)
    assert t2.record_usage(10, 0.25) is None
    assert t2.record_usage(10, 0.5) == ("budget.max_cost", "run exceeded max_cost=0.5 (spent 0.75)")


def test_negative_usage_is_a_caller_error() -> None:
    t, _ = tracker()
    with pytest.raises(ValueError, match="tokens must be between 0 and 2\\*\\*53-1, got -1"):
        t.record_usage(-1, 0.0)
    assert (t.tokens, t.cost) == (0, 0.0)


def test_max_wall_seconds_from_tracker_creation() -> None:
    t, clock = tracker(max_wall_seconds=300)
    assert t.check_wall(clock.now + 300) is None
    assert t.check_wall(clock.now + 300.5) == (
        "budget.max_wall_seconds",
        "run exceeded max_wall_seconds=300 (elapsed 300.500s)",
    )
    clock.now += 301
    assert t.check_wall() is not None


def test_unlimited_budgets_never_refuse() -> None:
    t, clock = tracker()
    for i in range(1000):
        assert t.on_step("execute_tool", "x", i) is None
        assert t.enter() is None
    assert t.record_usage(10**9, 10**6) is None
    assert t.check_wall(clock.now + 10**6) is None


def test_rate_limit_is_a_sliding_window_per_target() -> None:
    t, clock = tracker({"search": (2, 1)})
    assert t.on_step("execute_tool", "search", 1) is None
    clock.now += 0.5
    assert t.on_step("execute_tool", "search", 1) is None
    assert t.on_step("execute_tool", "other", 1) is None
    assert t.on_step("execute_tool", "search", 1) == (
        "ratelimit.search",
        "rate limit search=2/s exceeded: call 3 within 1s of tool:search",
    )
    clock.now += 0.5  # the first call leaves the window
    assert t.on_step("execute_tool", "search", 1) is None
    assert t.on_step("execute_tool", "search", 1) is not None


def test_refused_call_does_not_use_up_the_window() -> None:
    t, clock = tracker({"s": (1, 60)})
    assert t.on_step("execute_tool", "s", 0) is None
    for _ in range(5):
        assert t.on_step("execute_tool", "s", 0) is not None
    clock.now += 60
    assert t.on_step("execute_tool", "s", 0) is None


def test_glob_rate_limit_is_shared_by_matching_targets() -> None:
    t, _ = tracker({"search_*": (2, 3600)})
    assert t.on_step("execute_tool", "search_web", 0) is None
    assert t.on_step("execute_tool", "search_docs", 0) is None
    assert t.on_step("execute_tool", "search_web", 0) == (
        "ratelimit.search_*",
        "rate limit search_*=2/h exceeded: call 3 within 3600s of tool:search_web",
    )


def test_tracker_from_a_loaded_policy() -> None:
    ps = PolicySet.from_text(
        'version = 1\n[budgets]\nmax_steps = 1\n[rate_limits]\n"writer" = "1/m"\n'
    )
    clock = FakeClock()
    t = BudgetTracker(ps.budgets, ps.rate_limits, clock=clock)
    assert t.on_step("invoke_agent", "writer", 0) is None
    assert t.on_step("invoke_agent", "writer", 0) == (
        "budget.max_steps",
        "run exceeded max_steps=1 (step 2 of agent:writer)",
    )

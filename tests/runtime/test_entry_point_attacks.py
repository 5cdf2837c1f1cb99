"""Bad input at the entry points: refused up front, with the parameter, the value and the rule,
before a run directory, a file descriptor, a lease or a counter exists."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tenure import Context, Runtime, RuntimeConfig, SigningKey, agent
from tenure.policies import PolicySet


@agent(scopes={"web:read", "delegate"})
async def noop(ctx: Context) -> str:
    return "ran"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _run_dirs(evidence: Path) -> list[str]:
    if not evidence.exists():
        return []
    return sorted(p.name for p in evidence.iterdir() if p.name.startswith("run_"))


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"ttl": math.inf}, ValueError, "ttl must be a finite number of seconds"),
        ({"ttl": 1e300}, ValueError, "<= 2.592e+06"),
        ({"ttl": math.nan}, ValueError, "got nan"),
        ({"ttl": -1}, ValueError, "got -1"),
        ({"ttl": True}, TypeError, "ttl must be a number of seconds, got bool"),
        ({"ttl": "60"}, TypeError, "got str '60'"),
        ({"scopes": None}, TypeError, "scopes must be a collection of scope names, got NoneType"),
        ({"scopes": [1, 2]}, TypeError, "scopes entry must be a str, got int 1"),
        ({"scopes": "web:read"}, TypeError, "not the single string 'web:read'"),
        ({"scopes": {""}}, ValueError, "scopes entry must be 1 to 128 characters"),
        ({"principal": ""}, ValueError, "principal must be 1 to 256 characters"),
        ({"principal": "a" * 257}, ValueError, "got 257"),
        ({"principal": "alice\nroot"}, ValueError, "must not contain control characters"),
        ({"principal": "\x1b[31mroot"}, ValueError, "must not contain control characters"),
        ({"principal": "alice\u2028bob"}, ValueError, "must not contain control characters"),
        ({"principal": 7}, TypeError, "principal must be a str, got int 7"),
    ],
)
async def test_bad_run_arguments_are_refused_before_any_evidence_or_fd_exists(
    allow_all: PolicySet,
    evidence: Path,
    key: SigningKey,
    kwargs: dict[str, Any],
    error: type,
    text: str,
) -> None:
    """The attack: a run that never expires (``ttl=inf``), scopes that are not scopes, a
    principal that forges log lines. Each is refused naming the parameter and the rule;
    no run directory, ledger fd or lease was made for it."""
    call: dict[str, Any] = {"principal": "alice", "scopes": {"web:read"}, "ttl": 30, **kwargs}
    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        before = _fds()
        with pytest.raises(error) as err:
            await rt.start(noop, **call)
        assert _fds() == before
        assert _run_dirs(evidence) == []
        assert rt.pending_approvals() == []
        assert await rt.run(noop, principal="alice", ttl=30) == "ran"  # the runtime is fine
    assert text in str(err.value)


async def test_delegating_with_a_string_of_scopes_is_refused(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """``scopes="admin"`` is not the set {"admin"} (nor {"a","d","m","i","n"}): TypeError in
    the agent, and the child never starts."""
    started: list[str] = []

    @agent(scopes={"admin"})
    async def child(ctx: Context) -> None:
        started.append("child")

    @agent(scopes={"admin"})
    async def parent(ctx: Context) -> str:
        try:
            await ctx.delegate(child, scopes="admin")
        except TypeError as exc:
            return str(exc)
        return "delegated"

    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        message = await rt.run(parent, principal="alice", scopes={"admin"}, ttl=30)
    assert "delegate(scopes=...) must be a collection of scope names" in message
    assert started == []


FLOAT_FIELDS = [
    "lease_seconds",
    "watchdog_interval",
    "watchdog_liveness",
    "stall_bound",
    "worker_stall_bound",
    "heartbeat_interval",
    "attest_interval",
    "approval_timeout",
    "checkpoint_interval",
]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.inf, math.nan, 1e300])
def test_no_safety_interval_can_be_infinite_or_absurd(field: str, value: float) -> None:
    """``lease_seconds=inf`` would mint leases that never expire; an infinite watchdog
    liveness would never notice a dead watchdog. Refused, naming the field."""
    with pytest.raises(ValidationError) as err:
        RuntimeConfig(**{field: value})
    assert field in str(err.value)


async def test_a_runtime_with_an_infinite_lease_never_opens(evidence: Path) -> None:
    """Runtime(lease_seconds=inf) fails at construction: nothing is loaded, nothing written."""
    with pytest.raises(ValidationError, match="lease_seconds"):
        Runtime(evidence_dir=evidence, lease_seconds=math.inf)
    assert _run_dirs(evidence) == []


BUDGET = """
version = 1
[[rules]]
id = "all"
effect = "allow"
[budgets]
max_tokens = 100
max_cost = 1.0
"""


@pytest.mark.parametrize(
    ("tokens", "cost", "error"),
    [
        (0, math.nan, ValueError),
        (0, math.inf, ValueError),
        (0, -1.0, ValueError),
        (-5, 0.0, ValueError),
        (1.5, 0.0, TypeError),
        ("5", 0.0, TypeError),
        (0, "0.1", TypeError),
        (True, 0.0, TypeError),
    ],
)
async def test_usage_that_would_switch_budgets_off_is_refused_before_counting(
    evidence: Path, key: SigningKey, tokens: Any, cost: Any, error: type[BaseException]
) -> None:
    """The attack: ``record_usage(cost=nan)`` made every later ``cost > max_cost`` false.
    Refused before the counters move; a real overrun afterwards still stops the run."""
    seen: dict[str, Any] = {}

    @agent
    async def spender(ctx: Context) -> None:
        try:
            ctx.record_usage(tokens=tokens, cost=cost)
        except error as exc:
            seen["error"] = str(exc)
        tracker = ctx._port._run.tracker  # type: ignore[attr-defined]
        seen["counters"] = (tracker.tokens, tracker.cost)
        ctx.record_usage(tokens=0, cost=2.0)  # over max_cost: this must still stop the run
        seen["after"] = "not stopped"

    policy = PolicySet.from_text(BUDGET)
    async with Runtime(policies=policy, evidence_dir=evidence, key=key) as rt:
        from tenure import PolicyDenied

        with pytest.raises(PolicyDenied) as stop:
            await rt.run(spender, principal="alice", ttl=30)
    assert "error" in seen and seen["counters"] == (0, 0.0)
    assert "after" not in seen
    assert stop.value.check == "budget.max_cost"

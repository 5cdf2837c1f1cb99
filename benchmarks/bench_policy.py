"""Policy decision cost on a generated set of 200 rules.

Run: ``python -m benchmarks.bench_policy``. ``main()`` returns the named figures (µs per
decision, median over batches). Paths measured:

* ``cached``: the same (principal, action, target, caller) again, condition-free rules.
* ``new principal``: a (principal, …) never seen before; the target's candidate rules are known.
* ``cold``: both memo tables cleared before every decision (every glob walked).
* ``conditions``: a target whose matching rules carry ``when`` conditions (evaluated each call).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from tenure.policies import PolicySet

N_RULES = 200
BATCH = 200
BATCHES = 60


def generate(n: int = N_RULES) -> str:
    """A policy of ``n`` rules: exact targets, globs, principal globs, conditions, denies."""
    out = ["version = 1", 'default = "deny"', ""]
    for i in range(n):
        kind = i % 10
        out.append("[[rules]]")
        out.append(f'id = "rule-{i}"')
        if kind == 0:
            out.append('effect = "deny"')
            out.append('actions = ["execute_tool"]')
            out.append(f'targets = ["danger_{i}*"]')
        elif kind in (1, 2, 3, 4):
            out.append('effect = "allow"')
            out.append('actions = ["execute_tool"]')
            out.append(f'targets = ["tool_{i}", "tool_{i + 1}"]')
            out.append(f'principals = ["team{i % 7}:*", "user_{i}"]')
        elif kind in (5, 6):
            out.append('effect = "allow"')
            out.append(f'targets = ["svc{i}_*", "agent_{i}?"]')
            out.append('callers = ["planner*"]')
            out.append('actions = ["execute_tool"]')
        elif kind == 7:
            out.append('effect = "require_approval"')
            out.append('actions = ["execute_tool"]')
            out.append(f'targets = ["pay_{i}", "tool_{i - 6}"]')
            out.append(
                'when = { "args.amount" = { gt = 1000 }, "args.to" = { matches = "acct-[0-9]+" } }'
            )
        elif kind == 8:
            out.append('effect = "allow"')
            out.append('actions = ["invoke_agent"]')
            out.append(f'principals = ["org{i}/*"]')
        else:
            out.append('effect = "allow"')
            out.append(f'targets = ["x{i}[0-9]", "y{i}[!a]*"]')
        out.append("")
    return "\n".join(out)


def _median_us(call: Callable[[int], object], prepare: Callable[[], None] | None = None) -> float:
    samples = []
    for b in range(BATCHES):
        if prepare is not None:
            # per-call preparation would be measured; cold path uses its own loop
            prepare()
        t0 = time.perf_counter_ns()
        for i in range(BATCH):
            call(b * BATCH + i)
        samples.append((time.perf_counter_ns() - t0) / BATCH / 1000)
    return statistics.median(samples)


def _cold_us(ps: PolicySet) -> float:
    cache, tcache = ps._cache, ps._target_cache
    samples = []
    for _ in range(BATCHES * BATCH // 10):
        cache.clear()
        tcache.clear()
        t0 = time.perf_counter_ns()
        ps.decide("team0:alice", "execute_tool", "tool_22", "planner", None)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(samples)


def main() -> dict[str, Any]:
    """Measure and print; return ``{name: value}``."""
    t0 = time.perf_counter()
    ps = PolicySet.from_text(generate(), source="bench.toml")
    load_ms = (time.perf_counter() - t0) * 1000
    assert len(ps.rules) == N_RULES
    assert ps.decide("team0:alice", "execute_tool", "tool_22", "planner", None).allowed
    args = {"amount": 5000, "to": "acct-123"}
    assert ps.decide("team1:x", "execute_tool", "pay_17", "p", args).effect == "require_approval"

    decide = ps.decide
    figures: dict[str, Any] = {
        "policy rules": N_RULES,
        "policy load+compile (ms)": round(load_ms, 2),
        "policy decide cached (µs median)": round(
            _median_us(lambda i: decide("team0:alice", "execute_tool", "tool_22", "planner", None)),
            3,
        ),
        "policy decide new principal (µs median)": round(
            _median_us(lambda i: decide(f"team0:u{i}", "execute_tool", "tool_22", "planner", None)),
            3,
        ),
        "policy decide cold, caches cleared (µs median)": round(_cold_us(ps), 3),
        "policy decide with conditions (µs median)": round(
            _median_us(lambda i: decide("team1:x", "execute_tool", "pay_17", "p", args)), 3
        ),
        "policy decide default-deny cached (µs median)": round(
            _median_us(lambda i: decide("nobody", "execute_tool", "unknown", None, None)), 3
        ),
    }
    for name, value in figures.items():
        print(f"{name:50s} {value}")
    return figures


if __name__ == "__main__":
    main()

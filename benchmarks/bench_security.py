"""What the issue-13 defences cost: RE2 conditions, canonical snapshots, typed digests.

Run: ``python -m benchmarks.bench_security``. ``main()`` returns the named figures (µs,
median over batches). Measured:

* ``regex decision, 10 kB argument``: one decision of a rule whose ``matches`` condition
  (RE2) scans a 10,000-character argument (goal ≤ 50 µs), beside the same decision on a
  catastrophic pattern ``(a+)+`` (which Python's ``re`` could not finish at all).
* ``snapshot, dict of 10 scalars``: taking the canonical snapshot of a call whose one
  argument is a dict of 10 scalars (goal ≤ 5 µs), then thawing it for the body, then the
  value digest of the snapshot — the three costs every tool call now pays.
* ``snapshot, 10 scalar kwargs``: the same with ten keyword arguments (the shallow path).

* ``5,000-rule reload``: the longest the event loop went without a turn while
  ``rt.reload_policies`` (parse and compile on the loop) and ``rt.reload_policies_async``
  (in a worker thread, swapped on the loop) put a 5,000-rule file in force.

The chain-step cost before and after is ``bench_core``'s "chain of 1,000 governed tool
calls, per step" row, compared in RESULTS.md with the figure measured before this change.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from tenure import Runtime, SigningKey
from tenure.crypto import snapshot_call, value_digest
from tenure.policies import PolicySet

BATCH = 200
BATCHES = 60

_REGEX_POLICY = """
version = 1
[[rules]]
id = "notes"
effect = "allow"
targets = ["save_note"]
when = {{ "args.text" = {{ matches = "{pattern}" }} }}
"""


def _median_us(call: Callable[[], object]) -> float:
    samples = []
    for _ in range(BATCHES):
        t0 = time.perf_counter_ns()
        for _ in range(BATCH):
            call()
        samples.append((time.perf_counter_ns() - t0) / BATCH / 1000)
    return statistics.median(samples)


def _big_policy(n: int) -> str:
    out = ["version = 1"]
    for i in range(n):
        out += ["[[rules]]", f'id = "r{i}"', 'effect = "allow"', f'targets = ["t{i}", "g{i}*"]']
        if i % 5 == 0:
            out.append(f'when = {{ "args.x" = {{ lt = {i} }} }}')
    return "\n".join(out) + "\n"


async def _worst_gap(done: anyio.Event, out: list[float]) -> None:
    """Tick every millisecond until ``done``; append the longest gap between ticks (s)."""
    worst, last = 0.0, time.perf_counter()
    while not done.is_set():
        await anyio.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    out.append(worst)


def _reload_gaps_ms(n_rules: int = 5000) -> tuple[float, float]:
    """The longest loop gap (ms) during a sync and during an async reload of ``n_rules``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.toml"
        path.write_text(_big_policy(n_rules))

        async def measure() -> list[float]:
            gaps: list[float] = []
            async with Runtime(evidence_dir=Path(tmp) / "runs", key=SigningKey.generate()) as rt:
                for reload_async in (False, True):
                    done = anyio.Event()
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_worst_gap, done, gaps)
                        await anyio.sleep(0.01)
                        if reload_async:
                            await rt.reload_policies_async(path)
                        else:
                            rt.reload_policies(path)
                        await anyio.sleep(0.01)
                        done.set()
            return gaps

        sync_gap, async_gap = anyio.run(measure)
    return sync_gap * 1000, async_gap * 1000


def main() -> dict[str, Any]:
    """Measure and print; return ``{name: value}``."""
    typical = PolicySet.from_text(_REGEX_POLICY.format(pattern="[a-z0-9 .,]*"))
    evil = PolicySet.from_text(_REGEX_POLICY.format(pattern="(a+)+"))
    text = {"text": ("lorem ipsum dolor sit amet, " * 400)[:10_000]}
    evil_text = {"text": "a" * 9_999 + "b"}
    assert typical.decide("alice", "execute_tool", "save_note", None, text).allowed
    assert not evil.decide("alice", "execute_tool", "save_note", None, evil_text).allowed

    invoice: dict[str, object] = {f"field{i}": (i if i % 3 else f"value-{i}") for i in range(10)}
    invoice["amount"] = 12.5
    one_dict = snapshot_call((invoice,), {})
    kwargs = snapshot_call((), invoice)

    figures: dict[str, Any] = {
        "regex decision, 10 kB argument (µs median)": round(
            _median_us(lambda: typical.decide("alice", "execute_tool", "save_note", None, text)),
            2,
        ),
        "regex decision (a+)+, 10 kB argument (µs median)": round(
            _median_us(lambda: evil.decide("alice", "execute_tool", "save_note", None, evil_text)),
            2,
        ),
        "snapshot, dict of 10 scalars (µs median)": round(
            _median_us(lambda: snapshot_call((invoice,), {})), 2
        ),
        "thaw, dict of 10 scalars (µs median)": round(_median_us(one_dict.thaw), 2),
        "value digest, dict of 10 scalars (µs median)": round(
            _median_us(lambda: value_digest(one_dict.value())), 2
        ),
        "snapshot, 10 scalar kwargs (µs median)": round(
            _median_us(lambda: snapshot_call((), invoice)), 2
        ),
        "thaw + digest, 10 scalar kwargs (µs median)": round(
            _median_us(lambda: (kwargs.thaw(), value_digest(kwargs.value()))), 2
        ),
    }
    sync_gap, async_gap = _reload_gaps_ms()
    figures["5,000-rule reload on the loop: longest loop gap (ms)"] = round(sync_gap, 1)
    figures["5,000-rule reload off the loop: longest loop gap (ms)"] = round(async_gap, 1)
    for name, value in figures.items():
        print(f"{name:55s} {value}")
    return figures


if __name__ == "__main__":
    main()

"""Attestation costs: environment measurement, per-run statement, watchdog re-measure.

Run: ``python -m benchmarks.bench_attest``. ``main()`` returns the named figures (µs / ms).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenure.crypto import SigningKey, canonical
from tenure.evidence import _attest
from tenure.evidence._attest import Attestor, CodeItem, policy_files_digest

N_ITEMS = 20


def _per_call_us(fn: Callable[[], object], n: int) -> float:
    """Median over 5 batches of the mean µs per call."""
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def _make_items(directory: Path) -> list[CodeItem]:
    items = []
    for i in range(N_ITEMS):
        path = directory / f"bench_agent_{i}.py"
        path.write_text(f"async def agent_{i}(ctx, x):\n    return x + {i}\n" + "# pad\n" * 200)
        spec = importlib.util.spec_from_file_location(f"_bench_attest_{i}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        kind = "agent" if i % 2 else "tool"
        items.append(CodeItem.of(kind, f"item{i}", getattr(module, f"agent_{i}")))
    return items


def main() -> dict[str, Any]:
    """Measure and print; return ``{name: value}``."""
    figures: dict[str, Any] = {}
    cold = []
    for _ in range(5):
        att = Attestor(SigningKey.generate())
        t0 = time.perf_counter()
        env = att.environment()
        cold.append((time.perf_counter() - t0) * 1e3)
    figures["environment_cold_ms"] = round(statistics.median(cold), 2)
    figures["environment_distributions"] = len(env["distributions"])
    figures["environment_cached_us"] = round(_per_call_us(att.environment, 2000), 2)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        items = _make_items(d)
        policy = d / "policy.toml"
        policy.write_text('version = 1\ndefault = "deny"\n' + "# rule\n" * 100)
        config: dict[str, str | int | bool] = {"fsync": "checkpoint", "checkpoint_every": 1000}
        manifest = att.manifest(items, "sha256:" + "ab" * 32, [policy], config)
        figures["manifest_bytes"] = len(canonical(manifest))
        figures["manifest_per_run_us"] = round(
            _per_call_us(
                lambda: att.manifest(items, "sha256:" + "ab" * 32, [policy], config), 2000
            ),
            1,
        )
        figures["statement_per_run_us"] = round(
            _per_call_us(lambda: att.statement(manifest), 2000), 1
        )
        figures["manifest_rfc8785_uncached_us"] = round(
            _per_call_us(lambda: canonical(manifest), 200), 1
        )

        expected = policy_files_digest([policy])
        assert att.remeasure(items, [policy], None, expected) is None

        def remeasure() -> object:
            return att.remeasure(items, [policy], None, expected)

        # freshly written files are "racily clean": re-hashed until RACY_WINDOW_NS has passed
        figures["remeasure_20_items_racy_us"] = round(_per_call_us(remeasure, 500), 1)
        saved = _attest.RACY_WINDOW_NS
        _attest.RACY_WINDOW_NS = 0  # steady state: files older than the racy window
        try:
            figures["remeasure_20_items_us"] = round(_per_call_us(remeasure, 2000), 1)
            att_nodist = Attestor(att._key, watch_distributions=False)
            att_nodist.environment()
            figures["remeasure_20_items_no_dist_watch_us"] = round(
                _per_call_us(lambda: att_nodist.remeasure(items, [policy], None, expected), 2000), 1
            )
        finally:
            _attest.RACY_WINDOW_NS = saved
        t0 = time.perf_counter()
        att.remeasure_full()
        figures["remeasure_full_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        t0 = time.perf_counter()
        change = att.remeasure_full(installed_files=True)
        figures["remeasure_full_installed_files_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        figures["remeasure_full_installed_files_change"] = str(change) if change else None
        for i in range(N_ITEMS):
            sys.modules.pop(f"_bench_attest_{i}", None)

    for name, value in figures.items():
        print(f"{name:45s} {value}")
    return figures


if __name__ == "__main__":
    main()

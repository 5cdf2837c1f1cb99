"""Fuzzing the verifier and ``tenure trace`` with mutated real ledgers: they never raise.

The ledgers are the demo's (a denial, an approval, a revocation: every common record kind).
Each example applies one mutation — a flipped byte, a cut, a duplicated or deleted line, a
field replaced by an arbitrary JSON value of another type — and asserts that
:func:`verify_run` returns a report whose verdict is one of the three, that loading the trace
either builds a tree or raises :class:`LedgerReadError` (one line naming file and line),
and that every rendering of a tree that loaded works.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from tenure.cli._tree import print_trace
from tenure.evidence import LedgerReadError, verify_run
from tenure.lineage import load_trace, to_jaeger, trace_to_dict
from tests.support.demo_runs import DemoRuns

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutations(draw: st.DrawFn, lines: list[bytes]) -> list[bytes]:
    out = list(lines)
    n = draw(st.integers(0, len(out) - 1))
    how = draw(st.sampled_from(["flip", "cut", "dup", "delete", "field", "swap", "garbage"]))
    if how == "flip":
        pos = draw(st.integers(0, len(out[n]) - 1))
        bit = 1 << draw(st.integers(0, 7))
        line = bytearray(out[n])
        line[pos] ^= bit
        out[n] = bytes(line)
    elif how == "cut":
        cut = draw(st.integers(0, len(out[n]) - 1))
        out = [*out[:n], out[n][:cut]]
    elif how == "dup":
        out.insert(n, out[n])
    elif how == "delete":
        del out[n]
    elif how == "swap" and len(out) > 1:
        m = draw(st.integers(0, len(out) - 1))
        out[n], out[m] = out[m], out[n]
    elif how == "field":
        rec: dict[str, Any] = json.loads(out[n])
        name = draw(st.sampled_from(sorted(rec)))
        rec[name] = draw(json_values)
        out[n] = json.dumps(rec).encode() + b"\n"
    else:
        out.insert(n, draw(st.binary(max_size=40)) + b"\n")
    return out


def _check(run_dir: Path, public_key: Path) -> None:
    rep = verify_run(run_dir, public_key)
    assert rep.verdict in ("verified", "incomplete", "invalid")
    assert all(f.code for f in rep.failures + rep.warnings)
    try:
        tr = load_trace(run_dir)
    except LedgerReadError as exc:
        assert "\n" not in str(exc) and str(run_dir) in str(exc)
        return
    json.dumps(trace_to_dict(tr))
    json.dumps(to_jaeger(tr))
    print_trace(tr, Console(file=io.StringIO(), width=120))


@pytest.mark.parametrize("which", ["research", "revoked"])
def test_mutated_real_ledgers_never_crash_verify_or_trace(
    demo_runs: DemoRuns, tmp_path_factory: pytest.TempPathFactory, which: str
) -> None:
    source: Path = getattr(demo_runs, which)
    lines = (source / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    # A copy outside the demo's evidence directory: no witness, so every cut is "incomplete"
    # or "invalid" on its own merits.
    work = tmp_path_factory.mktemp("fuzz") / source.name
    shutil.copytree(source, work)

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(mutated=mutations(lines))
    def run(mutated: list[bytes]) -> None:
        (work / "ledger.jsonl").write_bytes(b"".join(mutated))
        _check(work, demo_runs.public_key)

    run()

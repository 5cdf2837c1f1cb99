"""Shared fixtures: an isolated key directory, evidence folder and small policy sets."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenure import SigningKey
from tenure.policies import PolicySet
from tests.support.demo_runs import DemoRuns, make_demo_runs
from tests.support.frameworks import FRAMEWORKS, framework_missing

_not_collected: list[str] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A test module importing a framework that is not installed is not collected, with the
    reason in the summary (``make test-floors`` installs the core and its test tools only:
    the frameworks' own requirements are newer than the core's floors)."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    tree = ast.parse(collection_path.read_text(encoding="utf-8"))
    wanted: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            wanted |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            wanted.add(node.module.split(".")[0])
    why = framework_missing(*(wanted & FRAMEWORKS))
    if why is None:
        return None
    _not_collected.append(f"{collection_path.name}: {why}")
    return True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which test modules were left out for a missing framework."""
    for line in _not_collected:
        terminalreporter.write_line(f"not collected (framework missing) {line}")


ALLOW_ALL = """
version = 1
default = "deny"

[[rules]]
id = "tests-allow-everything"
effect = "allow"
"""


@pytest.fixture(autouse=True)
def _isolated_key_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No test touches the user's real key directory."""
    monkeypatch.setenv("TENURE_KEY_DIR", str(tmp_path_factory.mktemp("keys")))
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    yield


@pytest.fixture
def key() -> SigningKey:
    """A fresh in-memory signing key."""
    return SigningKey.generate()


@pytest.fixture
def allow_all() -> PolicySet:
    """A policy that allows every step (tests of mechanisms other than policy)."""
    return PolicySet.from_text(ALLOW_ALL, source="allow-all.toml")


@pytest.fixture
def evidence(tmp_path: Path) -> Path:
    """A fresh evidence directory."""
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> DemoRuns:
    """The demo's two real runs, made once per session (copy them before tampering)."""
    return make_demo_runs(tmp_path_factory.mktemp("demo"))

"""Shared fixtures: an isolated key directory, evidence folder and small policy sets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tenure import SigningKey
from tenure.policies import PolicySet
from tests.support.demo_runs import DemoRuns, make_demo_runs

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

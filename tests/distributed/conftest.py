"""PostgreSQL for the distributed tests, started by the suite itself.

- ``pg_template``: one ``initdb`` per session (a stopped data directory, copied per server).
- ``pg_cluster``: the session's shared server; ``pg_url``: a fresh, empty database on it
  for one test (dropped afterwards).
- ``pg_private``: a server of the test's own, for the tests that kill or freeze it.
- ``pg_backend``: a :class:`PgBackend` on a fresh upgraded database; ``backend``: each
  backend in turn (in-process, then PostgreSQL), for properties both must keep.

When PostgreSQL cannot be had the tests that need it are skipped with the reason — unless
``TENURE_REQUIRE_POSTGRES=1`` (``make test`` sets it after installing the server), where
a missing server is a failure rather than a quiet skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import anyio
import asyncpg
import pytest

from tenure.runtime.backends import Backend, MemoryBackend
from tenure.runtime.backends._pg import PgBackend, upgrade

from ._pg import PgServer, PgUnavailable

ROOT = Path(__file__).resolve().parents[2]


def _unavailable(exc: PgUnavailable) -> None:
    if os.environ.get("TENURE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (TENURE_REQUIRE_POSTGRES=1): {exc}")
    pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture(scope="session")
def pg_template() -> Iterator[Path]:
    """A freshly initdb'd, never started data directory (copied by every server)."""
    try:
        server = PgServer.create()
    except PgUnavailable as exc:
        _unavailable(exc)
        raise AssertionError("unreachable") from exc
    try:
        yield server.data
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _start(template: Path) -> PgServer:
    try:
        server = PgServer.create(template)
        server.start()
    except PgUnavailable as exc:
        _unavailable(exc)
        raise AssertionError("unreachable") from exc
    return server


@pytest.fixture(scope="session")
def pg_cluster(pg_template: Path) -> Iterator[PgServer]:
    """The session's shared PostgreSQL server."""
    server = _start(pg_template)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def pg_url(pg_cluster: PgServer) -> AsyncIterator[str]:
    """A fresh, empty database on the shared server (its URL)."""
    name = "t_" + secrets.token_hex(6)
    admin = await asyncpg.connect(pg_cluster.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield pg_cluster.url(name)
    finally:
        admin = await asyncpg.connect(pg_cluster.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def pg_private(pg_template: Path) -> Iterator[PgServer]:
    """A server of this test's own (for tests that kill, freeze or restart it)."""
    server = _start(pg_template)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def pg_backend(pg_url: str) -> AsyncIterator[PgBackend]:
    """A PostgreSQL backend on a fresh database with the current schema."""
    await upgrade(pg_url)
    backend = await PgBackend.connect(pg_url, op_timeout=10.0)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=["memory", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn: the contract holds for the in-process one and PostgreSQL."""
    if request.param == "memory":
        return MemoryBackend()
    pg: Backend = request.getfixturevalue("pg_backend")
    return pg


def tenure_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "tenure", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


async def export_and_verify(
    url: str, run_id: str, out: Path, *argv: str
) -> subprocess.CompletedProcess[str]:
    """``tenure export RUN_ID --backend URL --out OUT`` then ``tenure verify OUT [ARGV]``:
    the verification's outcome (its exit code and what it printed)."""
    export = await anyio.to_thread.run_sync(
        tenure_cli, "export", run_id, "--backend", url, "--out", str(out)
    )
    assert export.returncode == 0, export.stderr
    return await anyio.to_thread.run_sync(tenure_cli, "verify", str(out), *argv)


async def marked(*paths: Path, within: float = 60) -> None:
    """Wait until every file exists (workers write them: another process's files, polled)."""
    with anyio.fail_after(within):
        while True:
            if all(p.exists() for p in paths):
                return
            await anyio.sleep(0.02)


class WorkerProcess:
    """A real ``tenure worker`` subprocess (see :func:`start_worker`)."""

    def __init__(self, proc: subprocess.Popen[str], name: str, evidence: Path) -> None:
        self.proc = proc
        self.name = name
        self.evidence = evidence

    def stop(self) -> int:
        """SIGTERM (drain) and wait; SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_worker(
    url: str,
    evidence: Path,
    name: str,
    pool: str = "research",
    concurrency: int = 4,
    wrap: Callable[[list[str]], list[str]] = list,
    extra: Sequence[str] = (),
    command: Sequence[str] = ("-m", "tenure", "worker"),
    agents: str = "tests.distributed.pool_agents",
    env: Mapping[str, str] | None = None,
) -> WorkerProcess:
    """Start ``tenure worker`` for the test agents (``wrap``: e.g. inside a network
    namespace; ``extra``: more options; ``command``: what runs it; ``agents``: another
    module; ``env``: more environment variables) and wait for its ready line."""
    proc = subprocess.Popen(
        wrap(
            [
                sys.executable,
                *command,
                "--backend",
                url,
                "--agents",
                agents,
                "--pool",
                pool,
                "--name",
                name,
                "--concurrency",
                str(concurrency),
                "--evidence-dir",
                str(evidence),
                *extra,
            ]
        ),
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TENURE_KEY_DIR": str(evidence / "key"), **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving pool" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker {name} did not start: {line!r}")
    return WorkerProcess(proc, name, evidence)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes (each stopped with SIGTERM at the end)."""
    started: list[WorkerProcess] = []

    def start(
        url: str,
        name: str,
        pool: str = "research",
        concurrency: int = 4,
        wrap: Callable[[list[str]], list[str]] = list,
        extra: Sequence[str] = (),
        command: Sequence[str] = ("-m", "tenure", "worker"),
        agents: str = "tests.distributed.pool_agents",
        env: Mapping[str, str] | None = None,
    ) -> WorkerProcess:
        worker = start_worker(
            url, tmp_path / name, name, pool, concurrency, wrap, extra, command, agents, env
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()

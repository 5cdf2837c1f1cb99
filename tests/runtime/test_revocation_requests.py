"""The kill switch from another process: `tenure revoke` requests in `<evidence>/.revocations`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from tenure import (
    Context,
    GovernanceUnavailable,
    LeaseRevoked,
    RunHandle,
    Runtime,
    SigningKey,
    agent,
)
from tenure.agents import Agent
from tenure.cli import app
from tenure.evidence import verify_run
from tenure.policies import PolicySet
from tenure.runtime import FolderRevocations, RevocationRequest
from tenure.runtime.services._revocations import MAX_REQUEST_BYTES, write_request

WORKERS = 5


@dataclass
class Crew:
    """Agents looping on short sleeps; anything they do after the stop is a leak."""

    started: int = 0
    ready: anyio.Event = field(default_factory=anyio.Event)
    handle: RunHandle | None = None
    after_stop: list[int] = field(default_factory=list)


def _crew_agents(crew: Crew) -> Agent:
    @agent(scopes={"work"})
    async def looper(ctx: Context, n: int) -> None:
        crew.started += 1
        if crew.started == WORKERS:
            crew.ready.set()
        while True:
            await anyio.sleep(0.005)
            if crew.handle is not None and crew.handle._run.stop is not None:
                crew.after_stop.append(n)

    @agent(scopes={"work"})
    async def crew_boss(ctx: Context) -> None:
        async with ctx.parallel() as p:
            for i in range(WORKERS):
                p.start(looper, i)

    return crew_boss


@contextlib.asynccontextmanager
async def _live(
    policy: PolicySet, evidence: Path, **cfg: Any
) -> AsyncIterator[tuple[Runtime, Crew]]:
    """A runtime with a live run of WORKERS looping agents (revoked at the end if still live)."""
    crew = Crew()
    boss = _crew_agents(crew)
    async with Runtime(
        policies=policy, evidence_dir=evidence, key=SigningKey.generate(), **cfg
    ) as rt:
        crew.handle = await rt.start(boss, principal="alice", scopes={"work"}, ttl=60)
        await crew.ready.wait()
        yield rt, crew
        if not crew.handle.done:
            rt.revoke(crew.handle.run_id, reason="test teardown")
            with pytest.raises(LeaseRevoked):
                await crew.handle.result()


def _records(run_dir: Path, kind: str) -> list[dict[str, object]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _requests(evidence: Path) -> list[str]:
    folder = evidence / ".revocations"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_tenure_revoke_in_another_process_stops_the_run_and_records_who_asked(
    allow_all: PolicySet, evidence: Path
) -> None:
    async with _live(allow_all, evidence) as (rt, crew):
        assert crew.handle is not None
        await _revoke_from_another_process(crew.handle.run_id, evidence)
        with anyio.fail_after(10), pytest.raises(LeaseRevoked) as info:
            await crew.handle.result()
        key = rt._key
    stop = info.value
    assert (stop.check, stop.source) == ("lease.revoked", "request:oncall")
    assert "incident 42: data leaving the region" in str(stop)
    assert crew.after_stop == []
    [revoked] = _records(crew.handle.evidence_path, "lease.revoked")
    assert (revoked["by"], revoked["reason"]) == (
        "request:oncall",
        "incident 42: data leaving the region",
    )
    assert _requests(evidence) == []  # applied: removed, the ledger keeps it
    assert verify_run(crew.handle.evidence_path, key.public_key).ok


async def _revoke_from_another_process(run_id: str, evidence: Path) -> None:
    cmd = [
        sys.executable,
        "-c",
        "from tenure.cli import main; main()",
        "revoke",
        run_id,
        "--reason",
        "incident 42: data leaving the region",
        "--by",
        "oncall",
        "--evidence-dir",
        str(evidence),
    ]
    done = await anyio.run_process(cmd, check=False)
    assert done.returncode == 0, done.stderr
    assert b"revocation requested" in done.stdout


async def test_request_for_a_child_lease_revokes_it_and_the_run_stops(
    allow_all: PolicySet, evidence: Path
) -> None:
    async with _live(allow_all, evidence) as (rt, crew):
        assert crew.handle is not None
        run = crew.handle._run
        child = next(lid for lid, st in run.leases.items() if st.lease.claims.depth == 1)
        write_request(evidence / ".revocations", child, "one worker misbehaves", "oncall")
        rt._require().wake_watchdog()
        with anyio.fail_after(10), pytest.raises(LeaseRevoked) as info:
            await crew.handle.result()
    assert (info.value.lease_id, info.value.source) == (child, "request:oncall")
    assert _records(crew.handle.evidence_path, "lease.revoked")[0]["lease"] == child


async def test_request_for_an_id_this_runtime_does_not_hold_is_left_alone(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Another runtime sharing the folder may hold it; nothing here stops."""
    async with _live(allow_all, evidence) as (rt, crew):
        assert crew.handle is not None
        write_request(evidence / ".revocations", "run_elsewhere", "not ours", "oncall")
        watchdog = rt._watchdog
        assert watchdog is not None
        watchdog.check_requests()
        watchdog.check_requests()
        assert crew.handle._run.stop is None
        assert _requests(evidence) == ["run_elsewhere.revoke.json"]


async def test_unreadable_request_folder_stops_every_run_fail_closed(
    allow_all: PolicySet, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: object) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    async with _live(allow_all, evidence) as (rt, crew):
        assert crew.handle is not None
        monkeypatch.setattr("tenure.runtime.services._revocations.os.scandir", denied)
        watchdog = rt._watchdog
        assert watchdog is not None
        watchdog.check_requests()
        with anyio.fail_after(10), pytest.raises(GovernanceUnavailable) as info:
            await crew.handle.result()
    assert info.value.check == "revocation.source"
    assert "Permission denied" in str(info.value)
    assert crew.after_stop == []


async def test_requests_are_ignored_when_turned_off(allow_all: PolicySet, evidence: Path) -> None:
    async with _live(allow_all, evidence, revocation_requests=False) as (rt, crew):
        assert crew.handle is not None
        write_request(evidence / ".revocations", crew.handle.run_id, "ignored", "oncall")
        watchdog = rt._watchdog
        assert watchdog is not None
        watchdog.check_requests()
        assert crew.handle._run.stop is None


class QueueSource:
    """A RevocationSource that is not a folder: what a shared backend plugs in as."""

    def __init__(self) -> None:
        self.queue: list[RevocationRequest] = []
        self.applied: list[RevocationRequest] = []

    def poll(self) -> list[RevocationRequest]:
        return list(self.queue)

    def done(self, request: RevocationRequest) -> None:
        self.queue.remove(request)
        self.applied.append(request)


async def test_a_custom_revocation_source_replaces_the_folder(
    allow_all: PolicySet, evidence: Path
) -> None:
    source = QueueSource()
    async with _live(allow_all, evidence, revocation_source=source) as (rt, crew):
        assert crew.handle is not None
        request = RevocationRequest(crew.handle.run_id, "shared backend says stop", "ops", "q1")
        source.queue.append(request)
        write_request(evidence / ".revocations", "run_ignored", "the folder is not read", "x")
        rt._require().wake_watchdog()
        with anyio.fail_after(10), pytest.raises(LeaseRevoked) as info:
            await crew.handle.result()
    assert info.value.source == "request:ops" and source.applied == [request]
    assert _requests(evidence) == ["run_ignored.revoke.json"]


# --- the folder source -------------------------------------------------------------------


def test_malformed_requests_are_logged_once_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / ".revocations"
    folder.mkdir()
    (folder / "garbage.revoke.json").write_text("{not json")
    (folder / "notarget.revoke.json").write_text(json.dumps({"reason": "x"}))
    (folder / "badtarget.revoke.json").write_text(json.dumps({"target": "../etc"}))
    (folder / "unrelated.txt").write_text("not a request")
    write_request(folder, "run_ok", "", "")
    source = FolderRevocations(folder)
    with caplog.at_level(logging.WARNING, logger="tenure.revocations"):
        first = source.poll()
        second = source.poll()
    assert [(r.target, r.reason, r.by) for r in first] == [("run_ok", "revoked", "unknown")]
    assert second == first
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3  # each bad file once, not on every pass
    assert any("garbage.revoke.json" in w and "not readable JSON" in w for w in warned)
    assert any("badtarget.revoke.json" in w and "'../etc'" in w for w in warned)


def test_an_applied_request_is_removed_and_forgotten(tmp_path: Path) -> None:
    folder = tmp_path / ".revocations"
    write_request(folder, "run_a", "why", "who")
    source = FolderRevocations(folder)
    [request] = source.poll()
    source.done(request)
    assert source.poll() == [] and list(folder.iterdir()) == []
    source.done(request)  # twice is fine


def test_an_absent_folder_holds_no_requests(tmp_path: Path) -> None:
    assert FolderRevocations(tmp_path / "nowhere").poll() == []


@pytest.mark.parametrize("target", ["", "../x", "a/b", "x" * 129])
def test_cli_refuses_an_id_that_is_not_a_run_or_lease_id(tmp_path: Path, target: str) -> None:
    res = CliRunner().invoke(
        app, ["revoke", target, "--reason", "r", "--evidence-dir", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "is not a run or lease id" in res.stderr
    assert not (tmp_path / ".revocations").exists() or not any(
        (tmp_path / ".revocations").iterdir()
    )


def test_cli_requires_a_reason(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["revoke", "run_a", "--evidence-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--reason is required" in res.stderr


# --- hostile files in the request folder ------------------------------------------------


def _hostile_folder(folder: Path) -> None:
    """Every kind of file that used to hang, exhaust or crash the folder reader."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "fifo.revoke.json")  # opening it for reading blocked for good
    (folder / "zero.revoke.json").symlink_to("/dev/zero")  # read until memory ran out
    (folder / "deep.revoke.json").write_text("[" * 2000 + "]" * 2000)  # was a RecursionError
    (folder / "huge.revoke.json").write_bytes(b" " * (MAX_REQUEST_BYTES + 1))
    (folder / "nested.revoke.json").write_text('{"target": {"target": "run_x"}}')
    (folder / "dir.revoke.json").mkdir()
    target = folder / "elsewhere.json"
    target.write_text(json.dumps({"target": "run_x"}))
    (folder / "link.revoke.json").symlink_to(target)  # a valid request, but through a link


def test_hostile_request_files_are_ignored_and_logged_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """FIFO, symlinks (to /dev/zero, to a valid request), deep or huge JSON, a directory:
    none is followed or read past its bound, none raises, each is logged once; the real
    request beside them is still found."""
    folder = tmp_path / ".revocations"
    _hostile_folder(folder)
    write_request(folder, "run_real", "stop it", "oncall")
    source = FolderRevocations(folder)
    with caplog.at_level(logging.WARNING, logger="tenure.revocations"):
        first = source.poll()
        second = source.poll()
    assert [r.target for r in first] == [r.target for r in second] == ["run_real"]
    warned = sorted(r.getMessage() for r in caplog.records)
    names = ["fifo", "zero", "deep", "huge", "nested", "dir", "link"]
    assert len(warned) == len(names)
    for name in names:
        assert any(f"{name}.revoke.json" in w for w in warned), name
    assert any("zero.revoke.json" in w and "not a regular file" in w for w in warned)
    assert any("huge.revoke.json" in w and f"{MAX_REQUEST_BYTES}" in w for w in warned)
    assert any("deep.revoke.json" in w and "not readable JSON" in w for w in warned)


async def test_hostile_request_files_cannot_kill_the_watchdog_or_stop_a_run(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The attack: plant hostile files where every runtime looks. The watchdog keeps its
    passes going, the live run is untouched, and a real request still stops it."""
    async with _live(allow_all, evidence) as (rt, crew):
        assert crew.handle is not None
        _hostile_folder(evidence / ".revocations")
        watchdog = rt._watchdog
        assert watchdog is not None
        passes = watchdog.passes
        with anyio.fail_after(10):
            while watchdog.passes < passes + 3:
                rt._require().wake_watchdog()
                await anyio.sleep(0.01)
        assert crew.handle._run.stop is None
        assert rt._gov.watchdog_deadline != float("-inf")
        write_request(evidence / ".revocations", crew.handle.run_id, "real", "oncall")
        rt._require().wake_watchdog()
        with anyio.fail_after(10), pytest.raises(LeaseRevoked) as info:
            await crew.handle.result()
    assert info.value.source == "request:oncall"

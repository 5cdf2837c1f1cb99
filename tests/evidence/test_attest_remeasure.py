"""Re-measuring: what the watchdog's attestation check detects, and what it must not flag."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tenure._errors import AttestationMismatch
from tenure.crypto import SigningKey
from tenure.evidence import _attest, _measure
from tenure.evidence._attest import (
    AttestationChange,
    Attestor,
    CodeItem,
    policy_files_digest,
)
from tenure.evidence._measure import _DistState

AGENT_SRC = "async def planner(ctx, topic):\n    return 'plan:' + topic\n"
# same length, different behaviour: a same-size edit
EVIL_SRC = "async def planner(ctx, topic):\n    return 'pwn:d' + topic\n"


@pytest.fixture
def module_file(tmp_path: Path) -> Iterator[tuple[Path, ModuleType]]:
    path = tmp_path / "agents_mod.py"
    path.write_text(AGENT_SRC)
    name = f"_tenure_test_agents_{os.getpid()}_{id(path)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield path, module
    sys.modules.pop(name, None)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text('version = 1\ndefault = "deny"\n')
    return p


@pytest.fixture
def att() -> Attestor:
    return Attestor(SigningKey.generate())


def _remeasure(
    att: Attestor, code: Sequence[CodeItem], policy: Path, expected: str | None = None
) -> AttestationChange | None:
    return att.remeasure(code, [policy], None, expected or policy_files_digest([policy]))


def test_nothing_changed_is_none(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    _, module = module_file
    code = [CodeItem.of("agent", "planner", module.planner)]
    expected = policy_files_digest([policy_file])
    att.manifest(code, "sha256:00", [policy_file], {})
    for _ in range(3):
        assert att.remeasure(code, [policy_file], None, expected) is None


def test_agent_module_rewritten_mid_run_is_detected(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)
    path.write_text(EVIL_SRC)
    change = _remeasure(att, [item], policy_file)
    assert change is not None
    assert change.what == "agent:planner" and change.check == "attestation.code"
    new = hashlib.sha256(EVIL_SRC.encode()).hexdigest()
    assert change.before == item.file_sha256 and change.after == new
    assert str(change) == (
        f"agent:planner source file {path} changed (sha256 {item.file_sha256[:12]}… → {new[:12]}…)"
    )


def test_same_size_edit_with_restored_mtime_is_detected(
    att: Attestor,
    module_file: tuple[Path, ModuleType],
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``touch -r`` after an edit restores mtime, not ctime: the stat check still trips."""
    path, module = module_file
    old = os.stat(path)
    item = CodeItem.of("agent", "planner", module.planner)
    monkeypatch.setattr(_attest, "RACY_WINDOW_NS", -(2**62))  # trust stat data fully
    before_ctime = old.st_ctime_ns
    while os.stat(path).st_ctime_ns == before_ctime:  # ctime must move on; no sleep needed
        path.write_text(EVIL_SRC)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == old.st_mtime_ns
    assert os.stat(path).st_size == old.st_size
    change = _remeasure(att, [item], policy_file)
    assert change is not None and change.what == "agent:planner"


def test_unchanged_stat_skips_rehashing(
    att: Attestor,
    module_file: tuple[Path, ModuleType],
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)
    monkeypatch.setattr(_attest, "RACY_WINDOW_NS", -(2**62))
    hashed: list[str] = []
    real = _measure._hash_file

    def counting(p: str) -> str:
        hashed.append(p)
        return real(p)

    monkeypatch.setattr("tenure.evidence._attest._hash_file", counting)
    assert _remeasure(att, [item] * 5, policy_file) is None
    assert str(path) not in hashed


def test_racily_clean_file_is_rehashed_until_old_enough(
    att: Attestor,
    module_file: tuple[Path, ModuleType],
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)  # file written just now: racy
    hashed: list[str] = []
    real = _measure._hash_file

    def counting(p: str) -> str:
        hashed.append(p)
        return real(p)

    monkeypatch.setattr("tenure.evidence._attest._hash_file", counting)
    assert _remeasure(att, [item], policy_file) is None
    assert str(path) in hashed


def test_touched_but_identical_file_is_not_a_change(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)
    path.write_text(AGENT_SRC)
    os.utime(path, ns=(1, 1))
    assert _remeasure(att, [item], policy_file) is None
    assert _remeasure(att, [item], policy_file) is None


def test_deleted_agent_module_is_a_change_not_an_exception(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)
    path.unlink()
    change = _remeasure(att, [item], policy_file)
    assert change is not None
    assert change.after == "missing" and "was deleted" in str(change)


def test_agent_module_replaced_by_unreadable_entry_is_a_change(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)
    path.unlink()
    path.mkdir()  # open() now fails with IsADirectoryError, even for root
    change = _remeasure(att, [item], policy_file)
    assert change is not None
    assert change.after == "unreadable" and "became unreadable" in str(change)


def test_code_object_swapped_in_memory_is_detected(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    _, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)

    async def other(ctx: Any, topic: str) -> str:
        return "evil"

    module.planner.__code__ = other.__code__
    change = _remeasure(att, [item], policy_file)
    assert change is not None and "replaced in memory" in str(change)


def test_policy_file_swapped_outside_a_reload_is_detected(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    _, module = module_file
    code = [CodeItem.of("agent", "planner", module.planner)]
    manifest = att.manifest(code, "sha256:00", [policy_file], {})
    expected = manifest["policy"]["filesDigest"]
    before = hashlib.sha256(policy_file.read_bytes()).hexdigest()
    swapped = policy_file.with_suffix(".new")
    swapped.write_text('version = 1\ndefault = "deny"\n[[rules]]\nid = "allow-all"\n')
    swapped.replace(policy_file)
    change = att.remeasure(code, [policy_file], None, expected)
    assert change is not None
    assert change.what == "policy" and change.check == "attestation.policy"
    assert f"policy file {policy_file} changed (sha256 {before[:12]}…" in str(change)
    assert change.before == before and change.path == str(policy_file)


def test_policy_file_swapped_for_a_fifo_is_a_change_found_without_blocking(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    """The attack: the policy file is replaced by a FIFO no one writes. Hashing it used to
    block the re-measuring thread in ``open`` for good; it is now unreadable, a change."""
    _, module = module_file
    code = [CodeItem.of("agent", "planner", module.planner)]
    manifest = att.manifest(code, "sha256:00", [policy_file], {})
    policy_file.unlink()
    os.mkfifo(policy_file)
    change = att.remeasure(code, [policy_file], None, manifest["policy"]["filesDigest"])
    assert change is not None and change.check == "attestation.policy"
    assert f"policy file {policy_file} became unreadable" in str(change)


def test_policy_swap_is_detected_against_a_content_digest(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    """The runtime passes its PolicySet digest (over parsed content), not a file digest."""
    _, module = module_file
    code = [CodeItem.of("agent", "planner", module.planner)]
    content_digest = "sha256:" + "c0" * 32
    att.manifest(code, content_digest, [policy_file], {})
    assert att.remeasure(code, [policy_file], None, content_digest) is None
    policy_file.write_text('version = 1\ndefault = "deny"\n# swapped\n')
    change = att.remeasure(code, [policy_file], None, content_digest)
    assert change is not None and "outside a policy reload" in str(change)
    assert content_digest in str(change)


def test_policy_digest_never_attested_is_a_change(att: Attestor, policy_file: Path) -> None:
    """Fail closed: a digest with no recorded baseline is not silently trusted."""
    reloaded = "sha256:" + "d1" * 32  # e.g. after reload_policies() with no baseline
    change = att.remeasure([], [policy_file], None, reloaded)
    assert change is not None and change.check == "attestation.policy"
    assert "was never attested" in str(change) and "baseline_policy" in str(change)


def test_baseline_policy_pins_the_files_a_reload_read(att: Attestor, policy_file: Path) -> None:
    reloaded = "sha256:" + "d2" * 32
    att.baseline_policy(reloaded, [policy_file])
    policy_file.write_text("swapped = true\n")  # before any remeasure: still caught
    assert att.remeasure([], [policy_file], None, reloaded) is not None


def test_policy_digest_function_is_used_when_given(att: Attestor, policy_file: Path) -> None:
    def digest_of(files: Sequence[Path]) -> str:
        return "sha256:" + hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    expected = digest_of([policy_file])
    assert att.remeasure([], [policy_file], digest_of, expected) is None
    policy_file.write_text("version = 2\n")
    change = att.remeasure([], [policy_file], digest_of, expected)
    assert change is not None and change.before == expected


def test_policy_digest_function_that_raises_is_a_change(att: Attestor, policy_file: Path) -> None:
    def broken(files: Sequence[Path]) -> str:
        raise OSError("gone")

    change = att.remeasure([], [policy_file], broken, "sha256:00")
    assert change is not None and "unloadable (OSError: gone)" in change.after


def test_deleted_policy_file_is_a_change(att: Attestor, policy_file: Path) -> None:
    expected = policy_files_digest([policy_file])
    policy_file.unlink()
    change = att.remeasure([], [policy_file], None, expected)
    assert change is not None and f"policy file {policy_file} was deleted" in str(change)


def test_change_becomes_an_attestation_mismatch(
    att: Attestor, module_file: tuple[Path, ModuleType], policy_file: Path
) -> None:
    path, module = module_file
    item = CodeItem.of("agent", "planner", module.planner)
    path.write_text(EVIL_SRC)
    change = _remeasure(att, [item], policy_file)
    assert change is not None
    err = change.to_error(run_id="r1", lease_id="l1")
    assert isinstance(err, AttestationMismatch)
    assert err.to_record()["check"] == "attestation.code"
    assert err.task == "agent:planner" and err.run_id == "r1" and err.source == "watchdog"


# --------------------------------------------------------------------- distributions


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A one-distribution environment whose RECORD and installed file live in tmp_path."""
    site = tmp_path / "site"
    info = site / "fakepkg-1.0.dist-info"
    info.mkdir(parents=True)
    module = site / "fakepkg.py"
    module.write_bytes(b"VALUE = 1\n")
    h = base64.urlsafe_b64encode(hashlib.sha256(module.read_bytes()).digest()).rstrip(b"=")
    record = info / "RECORD"
    record.write_text(f"fakepkg.py,sha256={h.decode()},10\nfakepkg-1.0.dist-info/RECORD,,\n")

    def fake_measure() -> Any:
        rhash = hashlib.sha256(record.read_bytes()).hexdigest()
        env = {
            "interpreter": {
                "implementation": "cpython",
                "version": "3",
                "executable": "",
                "executable_sha256": "missing",
            },
            "platform": {"system": "x", "machine": "y", "release": "z"},
            "distributions": [{"name": "fakepkg", "version": "1.0", "record_sha256": rhash}],
        }
        state = _DistState("fakepkg", str(record), rhash, _measure._stat(str(record)), 0)
        return env, {"fakepkg": state}

    monkeypatch.setattr("tenure.evidence._attest._measure_environment", fake_measure)
    return record, module


def test_distribution_uninstalled_mid_run_is_detected(
    att: Attestor, fake_dist: tuple[Path, Path], policy_file: Path
) -> None:
    record, _ = fake_dist
    att.environment()
    assert _remeasure(att, [], policy_file) is None
    record.unlink()
    change = _remeasure(att, [], policy_file)
    assert change is not None and change.what == "distribution:fakepkg"
    assert "was removed" in str(change)


def test_distribution_record_rewritten_is_detected(
    att: Attestor, fake_dist: tuple[Path, Path], policy_file: Path
) -> None:
    record, _ = fake_dist
    att.environment()
    record.write_text(record.read_text() + "extra.py,,\n")
    change = _remeasure(att, [], policy_file)
    assert change is not None and change.check == "attestation.environment"
    assert att.remeasure_full() is not None


def test_full_remeasure_finds_an_installed_file_edited_behind_its_record(
    att: Attestor, fake_dist: tuple[Path, Path], policy_file: Path
) -> None:
    _, module = fake_dist
    att.environment()
    assert att.remeasure_full(installed_files=True) is None
    module.write_bytes(b"VALUE = 2\n")
    assert _remeasure(att, [], policy_file) is None, "the cheap path does not read packages"
    change = att.remeasure_full(installed_files=True)
    assert change is not None and change.path == str(module)
    assert "changed" in str(change)


def test_full_remeasure_rehashes_code_files_regardless_of_stat(
    att: Attestor,
    module_file: tuple[Path, ModuleType],
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, module = module_file
    code = [CodeItem.of("agent", "planner", module.planner)]
    att.manifest(code, "sha256:00", [policy_file], {})
    assert att.remeasure_full() is None
    # simulate a stat-preserving edit the cheap path cannot see
    monkeypatch.setattr(_attest, "RACY_WINDOW_NS", -(2**62))
    real_stat = _measure._stat
    frozen = {str(path): real_stat(str(path))}
    monkeypatch.setattr(_attest, "_stat", lambda p: frozen.get(p) or real_stat(p))
    path.write_text(EVIL_SRC)
    assert att.remeasure(code, [policy_file], None, policy_files_digest([policy_file])) is None
    change = att.remeasure_full()
    assert change is not None and change.what == "agent:planner"

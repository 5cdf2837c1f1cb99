"""Attestation statements: DSSE encoding, in-toto Statement shape, signing and verification."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from tenure.crypto import SigningKey, pae, sign_envelope
from tenure.evidence import _attest, _measure
from tenure.evidence._attest import (
    ATTESTATION_FILE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    PREDICATE_TYPE_V1,
    STATEMENT_TYPE,
    SUBJECT_NAME,
    Attestor,
    CodeItem,
    verify_attestation,
)


async def planner(topic: str) -> str:
    """A stand-in agent defined in this file."""
    return topic


async def search(query: str) -> list[str]:
    """A stand-in tool defined in this file."""
    return [query]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def attestor(key: SigningKey) -> Attestor:
    return Attestor(key)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text('version = 1\ndefault = "deny"\n')
    return p


def _code() -> list[CodeItem]:
    return [CodeItem.of("agent", "planner", planner), CodeItem.of("tool", "search", search)]


def _manifest(att: Attestor, policy_file: Path) -> dict[str, Any]:
    return att.manifest(
        _code(),
        "sha256:" + "ab" * 32,
        [policy_file],
        {"fsync": "checkpoint", "checkpoint_every": 1000, "isolation": False},
    )


def _payload(envelope: dict[str, Any]) -> bytes:
    return base64.b64decode(envelope["payload"])


def _resign(key: SigningKey, statement: dict[str, Any], ptype: str = PAYLOAD_TYPE) -> Any:
    return sign_envelope(key, ptype, rfc8785.dumps(statement))


def test_dsse_pae_matches_the_spec_test_vector() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_statement_is_in_toto_v1_with_the_manifest_digest_as_subject_and_no_run_id(
    attestor: Attestor, policy_file: Path
) -> None:
    manifest = _manifest(attestor, policy_file)
    envelope, digest = attestor.statement(manifest)
    assert envelope["payloadType"] == PAYLOAD_TYPE
    payload = _payload(envelope)
    statement = json.loads(payload)
    assert payload == rfc8785.dumps(statement), "payload must be the RFC 8785 form"
    assert digest == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [
        {
            "name": SUBJECT_NAME,
            "digest": {"sha256": hashlib.sha256(rfc8785.dumps(manifest)).hexdigest()},
        }
    ]
    predicate = statement["predicate"]
    assert predicate["manifest"] == manifest
    assert set(predicate) == {"attester", "issuedAt", "manifest"}  # shared by runs: no run id
    assert predicate["attester"] == {"keyid": attestor.key_id}
    assert predicate["issuedAt"].endswith("Z")


def test_manifest_covers_interpreter_platform_dependencies_code_policy_and_config(
    attestor: Attestor, policy_file: Path
) -> None:
    m = _manifest(attestor, policy_file)
    assert set(m) == {"interpreter", "platform", "distributions", "code", "policy", "runtime"}
    assert set(m["interpreter"]) == {"implementation", "version", "executable", "executable_sha256"}
    assert len(m["interpreter"]["executable_sha256"]) == 64
    assert set(m["platform"]) == {"system", "machine", "release"}
    names = [d["name"] for d in m["distributions"]]
    assert names == sorted(names)
    assert {"tenure", "anyio", "cryptography", "pydantic", "rfc8785"} <= set(names)
    assert "pytest" not in names, "dev extras are not part of the runtime closure"
    assert [c["name"] for c in m["code"]] == ["agent:planner", "tool:search"]
    assert m["code"][0]["path"] == str(Path(__file__).resolve())
    assert m["policy"]["files"] == [
        {
            "path": str(policy_file),
            "sha256": hashlib.sha256(policy_file.read_bytes()).hexdigest(),
        }
    ]
    assert m["policy"]["filesDigest"] == _attest.policy_files_digest([policy_file])
    assert m["runtime"]["config"] == {
        "fsync": "checkpoint",
        "checkpoint_every": 1000,
        "isolation": False,
    }


def test_envelope_verifies_under_the_attesting_key(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    statement = verify_attestation(envelope, key.public_key)
    assert statement["predicateType"] == PREDICATE_TYPE


def test_a_per_run_v1_statement_still_verifies_and_needs_its_run_id(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    """Statements written before v2 (one per run, with runId and a nonce) are read too."""
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    v1 = json.loads(_payload(envelope))
    v1["predicateType"] = PREDICATE_TYPE_V1
    v1["predicate"].update(runId="run-1", nonce="00" * 16)
    statement = verify_attestation(_resign(key, v1), key.public_key)
    assert statement["predicate"]["runId"] == "run-1"
    del v1["predicate"]["runId"]
    with pytest.raises(ValueError, match="runId"):
        verify_attestation(_resign(key, v1), key.public_key)


def test_tampered_payload_is_rejected(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    statement = json.loads(_payload(envelope))
    statement["predicate"]["manifest"]["policy"]["digest"] = "sha256:" + "00" * 32
    forged = dict(envelope, payload=base64.b64encode(rfc8785.dumps(statement)).decode())
    with pytest.raises(ValueError, match="no signature verifies"):
        verify_attestation(forged, key.public_key)
    verify_attestation(envelope, key.public_key)  # the original is untouched and still valid


def test_envelope_signed_by_another_key_is_rejected(key: SigningKey, policy_file: Path) -> None:
    other = Attestor(SigningKey.generate())
    envelope, _ = other.statement(_manifest(other, policy_file))
    with pytest.raises(ValueError, match="no signature verifies"):
        verify_attestation(envelope, key.public_key)


def test_wrong_payload_type_is_rejected_even_when_signed(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    statement = json.loads(_payload(envelope))
    relabelled = _resign(key, statement, "application/vnd.tenure.lease.v1+json")
    with pytest.raises(ValueError, match="payloadType"):
        verify_attestation(relabelled, key.public_key)


def test_signed_statement_whose_subject_does_not_match_its_manifest_is_rejected(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    statement = json.loads(_payload(envelope))
    statement["predicate"]["manifest"]["code"] = []
    with pytest.raises(ValueError, match=r"subject\[0\].digest.sha256"):
        verify_attestation(_resign(key, statement), key.public_key)


def test_signed_statement_with_wrong_types_is_rejected(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    statement = json.loads(_payload(envelope))
    for field, value, msg in [
        ("_type", "https://in-toto.io/Statement/v0.1", "_type"),
        ("predicateType", "https://slsa.dev/provenance/v1", "predicateType"),
    ]:
        bad = copy.deepcopy(statement)
        bad[field] = value
        with pytest.raises(ValueError, match=msg):
            verify_attestation(_resign(key, bad), key.public_key)


def test_non_canonical_payload_is_rejected(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    statement = json.loads(_payload(envelope))
    loose = json.dumps(statement, indent=1).encode()
    with pytest.raises(ValueError, match="canonical"):
        verify_attestation(sign_envelope(key, PAYLOAD_TYPE, loose), key.public_key)


def test_statement_signs_the_manifest_it_is_given_even_after_mutation(
    key: SigningKey, attestor: Attestor, policy_file: Path
) -> None:
    """The canonical-bytes cache never signs stale sections in place of the caller's."""
    manifest = _manifest(attestor, policy_file)
    manifest["distributions"].append({"name": "zz-extra", "version": "1", "record_sha256": ""})
    manifest["code"][0]["digest"]["sha256"] = "00" * 32
    manifest["runtime"]["config"]["isolation"] = 1
    envelope, _ = attestor.statement(manifest)
    statement = verify_attestation(envelope, key.public_key)
    assert statement["predicate"]["manifest"] == manifest
    assert statement["predicate"]["manifest"]["runtime"]["config"]["isolation"] == 1
    assert type(statement["predicate"]["manifest"]["runtime"]["config"]["isolation"]) is int
    fresh = _manifest(attestor, policy_file)
    assert fresh["distributions"][-1]["name"] != "zz-extra", "cached environment unchanged"


def test_manifest_digest_is_stable_across_attestors_and_runs(policy_file: Path) -> None:
    a, b = Attestor(SigningKey.generate()), Attestor(SigningKey.generate())
    ma, mb = _manifest(a, policy_file), _manifest(b, policy_file)
    assert rfc8785.dumps(ma) == rfc8785.dumps(mb)
    subjects = set()
    for att, m in [(a, ma), (b, mb), (a, ma)]:
        envelope, _ = att.statement(m)
        subjects.add(json.loads(_payload(envelope))["subject"][0]["digest"]["sha256"])
    assert len(subjects) == 1


def test_environment_is_measured_once_per_attestor(
    monkeypatch: pytest.MonkeyPatch, policy_file: Path
) -> None:
    calls = 0
    real = _measure._measure_environment

    def counting() -> Any:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(_attest, "_measure_environment", counting)
    att = Attestor(SigningKey.generate())
    first = att.environment()
    first["platform"]["system"] = "tampered"  # the caller's copy, not the measurement
    second = att.environment()
    for _ in range(3):
        att.statement(_manifest(att, policy_file))
    att.remeasure(_code(), [policy_file], None, _attest.policy_files_digest([policy_file]))
    assert calls == 1
    assert second["platform"]["system"] != "tampered"


def test_code_item_digest_covers_module_file_and_qualname() -> None:
    item = CodeItem.of("agent", "planner", planner)
    data = Path(__file__).read_bytes()
    assert item.source == "file"
    assert item.file_sha256 == hashlib.sha256(data).hexdigest()
    assert item.digest == hashlib.sha256(data + b"\x00planner").hexdigest()
    assert CodeItem.of("tool", "search", search).digest != item.digest


def test_code_item_of_wrapped_function_measures_the_wrapped_code() -> None:
    @functools.wraps(planner)
    async def wrapper(topic: str) -> str:
        return await planner(topic)

    assert CodeItem.of("agent", "planner", wrapper).digest == (
        CodeItem.of("agent", "planner", planner).digest
    )


def test_code_item_without_source_file_falls_back_to_bytecode_or_builtin() -> None:
    ns: dict[str, Any] = {}
    exec(compile("f = lambda x: x + 1", "<repl>", "exec"), ns)
    g: dict[str, Any] = {}
    exec(compile("f = lambda x: x + 2", "<repl>", "exec"), g)
    a, b = CodeItem.of("tool", "f", ns["f"]), CodeItem.of("tool", "f", g["f"])
    assert a.source == b.source == "bytecode"
    assert a.path is None and a.digest != b.digest
    assert CodeItem.of("tool", "len", len).source == "builtin"


def test_code_item_rejects_bad_kind_and_name() -> None:
    with pytest.raises(ValueError, match="kind"):
        CodeItem.of("model", "x", planner)
    with pytest.raises(ValueError, match="name"):
        CodeItem.of("agent", "", planner)


def test_manifest_rejects_config_values_outside_str_int_bool(
    attestor: Attestor, policy_file: Path
) -> None:
    with pytest.raises(ValueError, match="config entries"):
        attestor.manifest(_code(), "sha256:00", [policy_file], {"ratio": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="outside"):
        attestor.manifest(_code(), "sha256:00", [policy_file], {"big": 2**60})


def test_write_is_atomic_and_round_trips(
    key: SigningKey, attestor: Attestor, policy_file: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    envelope, _ = attestor.statement(_manifest(attestor, policy_file))
    path = attestor.write(run_dir, envelope)
    assert path == run_dir / ATTESTATION_FILE
    assert sorted(p.name for p in run_dir.iterdir()) == [ATTESTATION_FILE]
    loaded = json.loads(path.read_text())
    assert loaded == envelope
    verify_attestation(loaded, key.public_key)


# --- sign_run: the per-run path, reusing an unchanged manifest ------------------------------

_CFG: dict[str, str | int | bool] = {
    "fsync": "checkpoint",
    "checkpoint_every": 1000,
    "isolation": False,
}


def _manifest_of(envelope: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    statement = verify_attestation(envelope, key.public_key)
    manifest: dict[str, Any] = statement["predicate"]["manifest"]
    return manifest


def test_sign_run_signs_once_for_runs_with_unchanged_inputs(
    key: SigningKey, policy_file: Path
) -> None:
    """Two runs with unchanged inputs share one verified statement (one signature), byte for
    byte what manifest() + statement() build."""
    att = Attestor(key)
    digest = "sha256:" + "ab" * 32
    code = _code()  # the runtime measures each agent and tool once: the same items each run
    env1, d1 = att.sign_run(code, digest, [policy_file], _CFG)
    env2, d2 = att.sign_run(code, digest, [policy_file], _CFG)
    assert env2 is env1 and d1 == d2
    p1 = json.loads(_payload(env1))
    assert p1["predicateType"] == PREDICATE_TYPE
    assert d1 == "sha256:" + hashlib.sha256(_payload(env1)).hexdigest()
    reference = Attestor(key).manifest(_code(), digest, [policy_file], _CFG)
    assert _manifest_of(env1, key) == reference
    assert (
        p1["subject"][0]["digest"]["sha256"] == hashlib.sha256(rfc8785.dumps(reference)).hexdigest()
    )


def test_sign_run_sees_a_policy_file_rewritten_between_runs(
    key: SigningKey, policy_file: Path
) -> None:
    """The cached manifest is never reused for changed file contents."""
    att = Attestor(key)
    digest = "sha256:" + "ab" * 32
    code = _code()
    env1, d1 = att.sign_run(code, digest, [policy_file], _CFG)
    policy_file.write_text('version = 1\ndefault = "deny"\n# edited\n')
    env2, d2 = att.sign_run(code, digest, [policy_file], _CFG)
    assert d1 != d2  # a new statement, signed for the new manifest
    files1 = _manifest_of(env1, key)["policy"]["files"]
    files2 = _manifest_of(env2, key)["policy"]["files"]
    assert files2 == [
        {
            "path": str(policy_file),
            "sha256": hashlib.sha256(policy_file.read_bytes()).hexdigest(),
        }
    ]
    assert files1 != files2


def test_sign_run_sees_new_code_and_a_new_policy_digest(key: SigningKey, policy_file: Path) -> None:
    att = Attestor(key)
    a = "sha256:" + "ab" * 32
    b = "sha256:" + "cd" * 32
    att.sign_run(_code(), a, [policy_file], _CFG)
    env2, _ = att.sign_run(_code()[:1], a, [policy_file], _CFG)
    env3, _ = att.sign_run(_code()[:1], b, [policy_file], _CFG)
    assert [c["name"] for c in _manifest_of(env2, key)["code"]] == ["agent:planner"]
    assert _manifest_of(env3, key)["policy"]["digest"] == b

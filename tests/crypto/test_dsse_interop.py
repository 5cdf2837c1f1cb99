"""DSSE interop: ``securesystemslib`` verifies Tenure's envelopes with a key imported the
standard way (``SSlibKey.from_crypto``), its keyid computed by the library, not forced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tenure.crypto import SigningKey, dsse_key_id
from tenure.crypto._dsse import sign_envelope
from tenure.evidence import ATTESTATION_NAME, INTOTO_PAYLOAD_TYPE
from tests.support.demo_runs import DemoRuns

sslib_dsse = pytest.importorskip("securesystemslib.dsse", reason="securesystemslib not installed")
sslib_signer = pytest.importorskip("securesystemslib.signer")


def test_tenure_keyid_is_what_securesystemslib_computes(key: SigningKey) -> None:
    imported = sslib_signer.SSlibKey.from_crypto(key.public_key)
    assert imported.keyid == dsse_key_id(key.public_key) == key.dsse_key_id


def test_securesystemslib_verifies_a_tenure_envelope(key: SigningKey) -> None:
    env = sign_envelope(key, "application/vnd.example+json", b'{"hello":"world"}')
    envelope = sslib_dsse.Envelope.from_dict(env)
    accepted = envelope.verify([sslib_signer.SSlibKey.from_crypto(key.public_key)], 1)
    assert list(accepted) == [key.dsse_key_id]
    other = sslib_signer.SSlibKey.from_crypto(SigningKey.generate().public_key)
    with pytest.raises(Exception, match="threshold"):
        envelope.verify([other], 1)


def test_securesystemslib_verifies_a_real_runs_attestation(
    demo_runs: DemoRuns, tmp_path: Path
) -> None:
    from tenure.crypto import load_public_key

    env = json.loads((demo_runs.research / ATTESTATION_NAME).read_text())
    envelope = sslib_dsse.Envelope.from_dict(env)
    assert envelope.payload_type == INTOTO_PAYLOAD_TYPE
    key = sslib_signer.SSlibKey.from_crypto(load_public_key(demo_runs.public_key))
    assert list(envelope.verify([key], 1)) == [key.keyid]
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"

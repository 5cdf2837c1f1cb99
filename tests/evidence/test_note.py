"""C2SP signed notes and tlog-checkpoints.

The known-answer test is the Go ``golang.org/x/mod/sumdb/note`` example (key
``PeterNeumann``): Ed25519 is deterministic, so signing its text must reproduce the
published note byte for byte, and the key id must be ``c74f20a3``.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenure.crypto import SigningKey
from tenure.evidence._note import (
    NoteError,
    format_checkpoint,
    note_key_id,
    open_checkpoint,
    origin_for,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_note,
)

GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN"
    + "XgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_key() -> Ed25519PrivateKey:
    blob = base64.b64decode(GO_SIGNER.split("+", 4)[4])
    assert blob[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(blob[1:])


def test_peter_neumann_known_answer_reproduces_byte_for_byte() -> None:
    key = _go_key()
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_NOTE
    assert note_key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    assert verifier_key("PeterNeumann", key.public_key()) == GO_VERIFIER
    assert verify_note(GO_NOTE, "PeterNeumann", key.public_key()) == GO_TEXT


def test_altered_note_text_is_rejected() -> None:
    pub = _go_key().public_key()
    with pytest.raises(NoteError, match="invalid"):
        verify_note(GO_NOTE.replace("cryptography", "cryptographY"), "PeterNeumann", pub)


def test_a_signature_respelled_in_non_canonical_base64_is_rejected() -> None:
    """The padding bits of the last base64 character are not signed: setting one decodes
    to the same signature, so a note would have two spellings. Refused."""
    respelled = GO_NOTE.replace("nAM=\n", "nAN=\n")
    assert base64.b64decode(respelled.split(" ")[-1]) == base64.b64decode(GO_NOTE.split(" ")[-1])
    with pytest.raises(NoteError, match="canonical base64"):
        verify_note(respelled, "PeterNeumann", _go_key().public_key())


def test_note_signed_by_another_key_with_the_same_name_is_rejected() -> None:
    """An attacker's signature under the trusted name has another key id: not accepted."""
    forged = sign_note(GO_TEXT, "PeterNeumann", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="no signature by the trusted key"):
        verify_note(forged, "PeterNeumann", _go_key().public_key())


def test_unknown_signatures_are_ignored_but_a_failing_known_one_rejects() -> None:
    key = _go_key()
    other = sign_note(GO_TEXT, "Other", Ed25519PrivateKey.generate())
    both = GO_NOTE + other.split("\n\n", 1)[1]
    assert verify_note(both, "PeterNeumann", key.public_key()) == GO_TEXT
    # A second line claiming the trusted key id with a bad signature is rejected.
    kid = note_key_id("PeterNeumann", key.public_key())
    bad = base64.b64encode(kid + b"\x00" * 64).decode()
    with pytest.raises(NoteError, match="invalid"):
        verify_note(GO_NOTE + f"— PeterNeumann {bad}\n", "PeterNeumann", key.public_key())


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,  # no signatures
        GO_TEXT + "\n",  # blank line, no signatures
        GO_TEXT + "\n- PeterNeumann AAAA\n",  # hyphen instead of em dash
        GO_TEXT + "\n— PeterNeumann not*base64\n",
        GO_TEXT + "\n— PeterNeumann AAAA\n",  # too short
        GO_TEXT + "\n— Peter Neumann AAAAAAAA\n",  # space in the name
        "no final newline\n\n— PeterNeumann AAAAAAAA",
        "control \x01 char\n\n— PeterNeumann AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_rejected(note: str) -> None:
    with pytest.raises(NoteError):
        verify_note(note, "PeterNeumann", _go_key().public_key())


def test_too_many_signature_lines_are_rejected() -> None:
    line = GO_NOTE.split("\n\n", 1)[1]
    with pytest.raises(NoteError, match="more than"):
        parse_note(GO_TEXT + "\n" + line * 101)


def test_checkpoint_roundtrip_and_format() -> None:
    key = SigningKey.generate()
    origin = origin_for("run-1")
    root = bytes(range(32))
    note = sign_checkpoint(origin, 42, root, key)
    text, sigs = parse_note(note)
    assert text == f"tenure.local/run-1\n42\n{base64.b64encode(root).decode()}\n"
    assert sigs[0].name == origin
    assert sigs[0].key_id == note_key_id(origin, key.public_key)
    cp = open_checkpoint(note, origin, key.public_key)
    assert (cp.origin, cp.size, cp.root, cp.extensions) == (origin, 42, root, ())


def test_checkpoint_for_another_origin_is_rejected() -> None:
    """A checkpoint of run A cannot be presented as run B's, even signed by the same key."""
    key = SigningKey.generate()
    note = sign_checkpoint(origin_for("run-a"), 3, bytes(32), key)
    with pytest.raises(NoteError):
        open_checkpoint(note, origin_for("run-b"), key.public_key)


@pytest.mark.parametrize(
    "text",
    [
        "o\n012\n" + base64.b64encode(bytes(32)).decode() + "\n",  # leading zero
        "o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",  # short root
        "o\n1\nnot base64!\n",
        "o\n1\n",
        "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_format_checkpoint_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        format_checkpoint("o", 1, b"short")
    with pytest.raises(ValueError):
        format_checkpoint("o\nx", 1, bytes(32))


@pytest.mark.parametrize("name", ["", "with space", "tab\tname", "plus+name", "nbsp\u00a0name"])
def test_signing_refuses_a_key_name_with_spaces_or_plus(name: str) -> None:
    with pytest.raises(NoteError, match="key name"):
        sign_note("text\n", name, SigningKey.generate())


@pytest.mark.parametrize(
    ("text", "code"), [("a\x00\n", "0000"), ("a\tb\n", "0009"), ("\x7f\n", "007F")]
)
def test_signing_refuses_note_text_with_control_characters(text: str, code: str) -> None:
    with pytest.raises(NoteError, match=f"control character U\\+{code}"):
        sign_note(text, "tenure.local/r1", SigningKey.generate())


def test_signing_accepts_printable_unicode_text_over_several_lines() -> None:
    note = sign_note("tenure.local/r1\n3\nröot ✓\n", "tenure.local/r1", SigningKey.generate())
    assert note.startswith("tenure.local/r1\n3\nröot ✓\n\n— tenure.local/r1 ")

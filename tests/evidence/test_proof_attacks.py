"""Proofs handed to a verifier by someone else: each way a proof can lie about its shape is
refused with a :class:`ProofError` naming the line or field, and the honest proof still
verifies afterwards (the checker keeps no state a bad proof could poison)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from tenure.evidence._ledger_io import LedgerConfig
from tenure.evidence._note import sign_checkpoint
from tenure.evidence._proof import (
    MAX_PROOF_BYTES,
    ProofError,
    prove_consistency,
    prove_inclusion,
    verify_proof,
)
from tests.support.run_builder import RunBuilder, build_run

Edit = Callable[[list[str]], list[str]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> RunBuilder:
    """A closed run with a signed checkpoint every 5 records (consistency proofs need two)."""
    root = tmp_path_factory.mktemp("proofs")
    return build_run(root, 12, config=LedgerConfig(checkpoint_every=5, checkpoint_interval=0))


def _set(n: int, text: str) -> Edit:
    def edit(lines: list[str]) -> list[str]:
        return [*lines[:n], text, *lines[n + 1 :]]

    return edit


def _drop(n: int) -> Edit:
    return lambda lines: [*lines[:n], *lines[n + 1 :]]


INCLUSION_LIES: dict[str, tuple[Edit, str]] = {
    "extra_not_base64": (_set(1, "extra !!!"), "extra: not base64"),
    "no_index_line": (_drop(2), "line 3: expected 'index <n>'"),
    "index_with_leading_zero": (_set(2, "index 03"), "'03' is not a decimal"),
    "index_negative": (_set(2, "index -1"), "'-1' is not a decimal"),
    "index_too_large": (_set(2, "index 99999999999999999999"), "is too large"),
    "hash_not_base64": (_set(3, "%%%"), "proof line 4: not base64"),
    "hash_of_31_bytes": (
        _set(3, base64.b64encode(b"x" * 31).decode()),
        "a hash must be 32 bytes, got 31",
    ),
    "no_signature_lines": (
        lambda lines: [line for line in lines if not line.startswith("\u2014 ")],
        "expected signature lines after its text",
    ),
    "text_after_the_checkpoint": (
        lambda lines: [*lines, "smuggled"],
        "unexpected text after the checkpoint",
    ),
    "not_a_proof": (_set(0, "c2sp.org/tlog-proof@v9"), "first line must be"),
}


@pytest.mark.parametrize("lie", sorted(INCLUSION_LIES))
def test_an_inclusion_proof_that_lies_about_its_shape_is_refused_by_line(
    built: RunBuilder, lie: str
) -> None:
    honest = prove_inclusion(built.run_dir, 3)
    edit, why = INCLUSION_LIES[lie]
    with pytest.raises(ProofError, match=why):
        verify_proof("\n".join(edit(honest.split("\n"))), built.key.public_key)
    assert verify_proof(honest, built.key.public_key).index == 3


def test_an_inclusion_proof_without_its_record_proves_nothing(built: RunBuilder) -> None:
    lines = prove_inclusion(built.run_dir, 3).split("\n")
    with pytest.raises(ProofError, match="no record: the proof carries none"):
        verify_proof("\n".join(_drop(1)(lines)), built.key.public_key)


def test_a_checkpoint_of_another_origin_is_not_a_tenure_runs(built: RunBuilder) -> None:
    """The attack: a proof against a validly signed note of another log (same key)."""
    text = prove_inclusion(built.run_dir, 3)
    _, size, root = (built.run_dir / "checkpoint").read_text().split("\n")[:3]
    forged = sign_checkpoint("example.com/other-log", int(size), base64.b64decode(root), built.key)
    with pytest.raises(ProofError, match="is not a Tenure run's"):
        verify_proof(text[: text.index("\n\n") + 2] + forged, built.key.public_key)


def test_a_proof_that_is_not_text_or_too_large_is_refused_before_parsing(
    built: RunBuilder,
) -> None:
    with pytest.raises(ProofError, match="proof is not UTF-8"):
        verify_proof(b"\xff\xfe", built.key.public_key)
    with pytest.raises(ProofError, match=f"proof larger than {MAX_PROOF_BYTES} bytes"):
        verify_proof(b"x" * (MAX_PROOF_BYTES + 1), built.key.public_key)


def _consistency(built: RunBuilder) -> str:
    return prove_consistency(built.run_dir, 5)


CONSISTENCY_LIES: dict[str, tuple[Edit, str]] = {
    "no_old_line": (_set(1, "size 5"), "line 2: expected 'old <size>'"),
    "old_size_other_than_the_checkpoint": (_set(1, "old 6"), "the proof says 6"),
}


@pytest.mark.parametrize("lie", sorted(CONSISTENCY_LIES))
def test_a_consistency_proof_that_lies_about_its_shape_is_refused(
    built: RunBuilder, lie: str
) -> None:
    honest = _consistency(built)
    edit, why = CONSISTENCY_LIES[lie]
    with pytest.raises(ProofError, match=why):
        verify_proof("\n".join(edit(honest.split("\n"))), built.key.public_key)
    check = verify_proof(honest, built.key.public_key)
    assert (check.kind, check.old_size) == ("consistency", 5)


def test_a_consistency_proof_with_one_checkpoint_is_refused(built: RunBuilder) -> None:
    latest = (built.run_dir / "checkpoint").read_text()
    cut = _consistency(built).removesuffix(latest)
    with pytest.raises(ProofError, match="checkpoint 2: expected signature lines"):
        verify_proof(cut, built.key.public_key)


def test_a_consistency_proof_between_two_runs_is_refused(built: RunBuilder, tmp_path: Path) -> None:
    """The attack: the old checkpoint of this run, the new one of another run signed by the
    same key: a prefix of another log proves nothing about this one."""
    other = build_run(tmp_path, 12, key=built.key, run_id="run-0002")
    latest = (built.run_dir / "checkpoint").read_text()
    foreign = (other.run_dir / "checkpoint").read_text()
    spliced = _consistency(built).removesuffix(latest) + foreign
    with pytest.raises(ProofError, match="run 'run-0002''s, not 'run-0001''s"):
        verify_proof(spliced, built.key.public_key)

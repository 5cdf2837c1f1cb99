"""Attacks on policy conditions: values that lie, numbers that are not numbers, runaway regexes.

Each test names the attack, asserts the request is denied (never allowed by a broader rule)
and that the policy set itself did not change (its digest is what it was).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from tenure.crypto import snapshot_call
from tenure.policies import PolicyError, PolicySet
from tenure.policies._loader import MAX_POLICY_BYTES
from tenure.policies._regex import MAX_MATCH_CHARS

PAYMENTS = """
version = 1
default = "deny"

[[rules]]
id = "big-payments-denied"
effect = "deny"
targets = ["pay"]
when = { "args.amount" = { gt = 1000 } }

[[rules]]
id = "payments-over-100-held"
effect = "require_approval"
targets = ["pay"]
when = { "args.amount" = { ge = 100 } }

[[rules]]
id = "blocked-accounts"
effect = "deny"
targets = ["pay"]
when = { "args.to" = { in = ["acct-evil", "acct-sanctioned"] } }

[[rules]]
id = "payments-allowed"
effect = "allow"
targets = ["pay"]
"""


def _decide(ps: PolicySet, **args: Any) -> tuple[str, str]:
    d = ps.decide("alice", "execute_tool", "pay", "agent", args)
    return d.effect, d.rule_id


@pytest.fixture
def payments() -> PolicySet:
    return PolicySet.from_text(PAYMENTS, source="payments.toml")


@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf])
def test_a_non_finite_amount_never_reaches_the_broader_allow_rule(
    payments: PolicySet, amount: float
) -> None:
    """NaN matches neither ``gt 1000`` nor ``ge 100``; it must not fall through to the allow."""
    digest = payments.digest
    effect, rule = _decide(payments, amount=amount, to="acct-1")
    assert effect == "deny"
    assert rule in ("big-payments-denied", "payments-over-100-held")
    assert payments.digest == digest


def test_negative_infinity_does_not_satisfy_an_upper_bound_that_allows() -> None:
    """``lt 100`` would hold for -inf; a non-finite number never decides a condition."""
    ps = PolicySet.from_text(
        'version = 1\n[[rules]]\nid = "small"\neffect = "allow"\n'
        'when = { "args.amount" = { lt = 100 } }\n'
    )
    d = ps.decide("alice", "execute_tool", "pay", None, {"amount": -math.inf})
    assert d.effect == "deny" and "not a finite number" in d.reason


class _LyingInt(int):
    def __gt__(self, other: object) -> bool:
        return False

    def __ge__(self, other: object) -> bool:
        return False

    __hash__ = int.__hash__


class _LyingStr(str):
    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


def test_an_int_whose_comparisons_lie_is_never_compared(payments: PolicySet) -> None:
    """Handed to the engine raw, a lying int is not a number: the conditional rule denies."""
    effect, rule = _decide(payments, amount=_LyingInt(5000), to="acct-1")
    assert (effect, rule) == ("deny", "big-payments-denied")


def test_an_int_whose_comparisons_lie_is_decided_on_the_value_it_holds(
    payments: PolicySet,
) -> None:
    """Through the snapshot (what the runtime does) it is the plain 5000: over the limit."""
    snap = snapshot_call((), {"amount": _LyingInt(5000), "to": "acct-1"})
    effect, rule = _decide(payments, **snap.kwargs)
    assert (effect, rule) == ("deny", "big-payments-denied")


def test_a_str_whose_equality_lies_does_not_evade_an_in_deny_list(payments: PolicySet) -> None:
    """``in`` uses ``==``; a str subclass saying "not equal" is not compared, and its snapshot
    is the exact str, which the deny list catches."""
    raw = _decide(payments, amount=5, to=_LyingStr("acct-evil"))
    assert raw == ("deny", "blocked-accounts")
    snap = snapshot_call((), {"amount": 5, "to": _LyingStr("acct-evil")})
    assert _decide(payments, **snap.kwargs) == ("deny", "blocked-accounts")
    assert _decide(payments, amount=5, to="acct-1") == ("allow", "payments-allowed")


CATASTROPHIC = """
version = 1
[[rules]]
id = "names"
effect = "allow"
when = { "args.name" = { matches = "(a+)+" } }
"""


def test_a_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    """``(a+)+`` against ``a``*N + ``b`` backtracks exponentially in ``re``; RE2 answers at
    once (this test would never finish on ``re``: N = 5,000)."""
    ps = PolicySet.from_text(CATASTROPHIC)
    d = ps.decide("alice", "execute_tool", "t", None, {"name": "a" * 5000 + "b"})
    assert d.effect == "deny" and d.rule_id == "default-deny"
    assert ps.decide("alice", "execute_tool", "t", None, {"name": "a" * 5000}).allowed


def test_an_argument_longer_than_a_condition_evaluates_denies() -> None:
    """Beyond MAX_MATCH_CHARS the condition cannot be evaluated: deny, naming the bound."""
    ps = PolicySet.from_text(CATASTROPHIC)
    d = ps.decide("alice", "execute_tool", "t", None, {"name": "a" * (MAX_MATCH_CHARS + 1)})
    assert d.effect == "deny" and d.rule_id == "names"
    assert f"more than the {MAX_MATCH_CHARS}" in d.reason


def test_text_with_lone_surrogates_is_not_matched_but_denied() -> None:
    """RE2 takes UTF-8; a value it cannot encode cannot be evaluated, so it denies."""
    ps = PolicySet.from_text(CATASTROPHIC)
    d = ps.decide("alice", "execute_tool", "t", None, {"name": "a\ud800"})
    assert d.effect == "deny" and "lone surrogates" in d.reason


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "(?=a)a", "(?<!x)a"])
def test_patterns_that_need_backtracking_are_refused_with_file_and_line(pattern: str) -> None:
    """Backreferences and lookaround cannot be linear: the file is refused where they are."""
    text = (
        'version = 1\n[[rules]]\nid = "r"\neffect = "allow"\n'
        f'when = {{ "args.x" = {{ matches = "{pattern}" }} }}\n'
    )
    with pytest.raises(PolicyError) as err:
        PolicySet.from_text(text, source="rx.toml")
    assert err.value.path == "rx.toml" and err.value.line == 5
    assert "RE2 syntax" in err.value.reason


def test_patterns_and_values_are_matched_as_text_not_as_bytes() -> None:
    """RE2 runs on UTF-8: ``.`` is one character, a non-ASCII literal matches itself."""
    ps = PolicySet.from_text(
        'version = 1\n[[rules]]\nid = "r"\neffect = "allow"\n'
        'when = { "args.x" = { matches = "é.ü" } }\n'
    )
    assert ps.decide("a", "execute_tool", "t", None, {"x": "é€ü"}).allowed
    assert not ps.decide("a", "execute_tool", "t", None, {"x": "é€€ü"}).allowed


@pytest.mark.parametrize(
    ("tail", "line", "reason"),
    [
        ('[approvers]\ncfo = "ed25519:abc"\n', 7, "is not valid base64"),
        ('[approvers]\ncfo = "rsa:AAAA"\n', 7, "expected an Ed25519 public key"),
        ('[approvers]\ncfo = "ed25519:AAAA"\n', 7, "is 32 bytes, got 3"),
        ('[approvers]\n"bad name" = "ed25519:AAAA"\n', 7, "approver name 'bad name'"),
    ],
)
def test_approver_keys_that_are_not_ed25519_keys_are_refused_with_file_and_line(
    tail: str, line: int, reason: str
) -> None:
    """An approver declaration that cannot verify a signature is a load error, not an
    approver nobody can ever be."""
    text = 'version = 1\n[[rules]]\nid = "r"\neffect = "require_approval"\n\n' + tail
    with pytest.raises(PolicyError) as err:
        PolicySet.from_text(text, source="ap.toml")
    assert (err.value.path, err.value.line) == ("ap.toml", line)
    assert reason in err.value.reason


def test_a_rule_naming_an_undeclared_approver_is_refused() -> None:
    """``approvers = ["ceo"]`` with no ``ceo`` declared would hold steps nobody can answer."""
    text = 'version = 1\n[[rules]]\nid = "r"\neffect = "require_approval"\napprovers = ["ceo"]\n'
    with pytest.raises(PolicyError) as err:
        PolicySet.from_text(text, source="ap.toml")
    assert err.value.line == 5 and "not declared in [approvers]" in err.value.reason
    allow = 'version = 1\n[[rules]]\nid = "r"\neffect = "allow"\napprovers = ["ceo"]\n'
    with pytest.raises(PolicyError, match="approvers apply only to"):
        PolicySet.from_text(allow)


# --- policy files that are not what they claim ---------------------------------------------

DENY_SHELL = 'version = 1\n\n[[rules]]\nid = "no-shell"\neffect = "deny"\ntargets = ["shell*"]\n'
ALLOW_ALL = 'version = 1\n\n[[rules]]\nid = "all"\neffect = "allow"\n'


def test_a_policy_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """The attack: ``policy.toml`` is a FIFO no one writes; reading it would hang the load
    (or, in a watched reload, the reload for good). It is refused by its file type."""
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="not a regular file \\(a FIFO"):
        PolicySet.load(fifo)


def test_a_policy_file_that_is_a_device_or_huge_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    device = tmp_path / "zero.toml"
    device.symlink_to("/dev/zero")
    with pytest.raises(PolicyError, match="a device"):
        PolicySet.load(device)
    huge = tmp_path / "huge.toml"
    with huge.open("wb") as f:
        f.truncate(MAX_POLICY_BYTES + 1)  # sparse: refused by its size, not read
    with pytest.raises(PolicyError, match=f"more than the {MAX_POLICY_BYTES} a policy file"):
        PolicySet.load(huge)


def test_a_deny_file_replaced_by_a_fifo_fails_the_folder_instead_of_dropping_its_rules(
    tmp_path: Path,
) -> None:
    """The attack: in a policy folder, ``deny.toml`` is swapped for a FIFO. Leaving the
    entry out would load the folder without its deny rules (fail open); the load fails,
    naming the file."""
    (tmp_path / "allow.toml").write_text(ALLOW_ALL)
    (tmp_path / "deny.toml").write_text(DENY_SHELL)
    before = PolicySet.load(tmp_path)
    assert before.decide("alice", "execute_tool", "shell_exec", None, {}).effect == "deny"
    (tmp_path / "deny.toml").unlink()
    os.mkfifo(tmp_path / "deny.toml")
    with pytest.raises(PolicyError) as info:
        PolicySet.load(tmp_path)
    assert "deny.toml" in str(info.value) and "FIFO" in str(info.value)


def test_a_policy_file_behind_a_symlink_still_loads(tmp_path: Path) -> None:
    """Mounted configuration (a Kubernetes ConfigMap) is a symlink: it is followed."""
    real = tmp_path / "real.toml"
    real.write_text(DENY_SHELL)
    link = tmp_path / "policy.toml"
    link.symlink_to(real)
    assert (
        PolicySet.load(link).decide("alice", "execute_tool", "shell_x", None, {}).effect == "deny"
    )

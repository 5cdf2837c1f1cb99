"""Decisions: effects, precedence, default deny, globs, conditions that fail closed."""

from __future__ import annotations

from typing import Any

import pytest

import tenure.policies as policies
from tenure.policies import Decision, PolicySet

HEAD = 'version = 1\ndefault = "deny"\n'


def rule(rid: str, effect: str, **keys: Any) -> str:
    lines = ["[[rules]]", f'id = "{rid}"', f'effect = "{effect}"']
    for key, value in keys.items():
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def policy(*rules: str) -> PolicySet:
    return PolicySet.from_text(HEAD + "\n".join(rules), source="t.toml")


def tool(ps: PolicySet, target: str, args: dict[str, Any] | None = None, **kw: Any) -> Decision:
    return ps.decide(
        kw.get("principal", "alice"), "execute_tool", target, kw.get("caller", "planner"), args
    )


def test_public_names_match_all() -> None:
    """Every name in __all__ exists, and every public name of the package is in __all__."""
    public = {n for n in dir(policies) if not n.startswith("_") and n != "annotations"}
    assert set(policies.__all__) == public


@pytest.mark.parametrize("effect", ["allow", "deny", "require_approval"])
def test_each_effect_is_returned_with_its_rule(effect: str) -> None:
    ps = policy(rule("r1", effect))
    d = tool(ps, "search")
    assert (d.effect, d.rule_id) == (effect, "r1")
    assert d.allowed is (effect == "allow")


def test_empty_policy_denies_by_default_deny() -> None:
    d = policy().decide("alice", "invoke_agent", "writer", None, None)
    assert d == Decision(
        "deny", "default-deny", "no rule matched principal 'alice', invoke_agent 'writer'"
    )
    assert not d.allowed


def test_deny_wins_over_approval_and_allow_in_any_order() -> None:
    ps = policy(rule("a", "allow"), rule("d", "deny"), rule("q", "require_approval"))
    assert tool(ps, "x").rule_id == "d"
    ps = policy(rule("d", "deny"), rule("q", "require_approval"), rule("a", "allow"))
    assert tool(ps, "x").rule_id == "d"


def test_require_approval_wins_over_allow() -> None:
    ps = policy(rule("a", "allow"), rule("q", "require_approval"), rule("a2", "allow"))
    d = tool(ps, "x")
    assert (d.effect, d.rule_id) == ("require_approval", "q")


def test_first_rule_of_the_winning_effect_is_named() -> None:
    ps = policy(rule("a1", "allow"), rule("a2", "allow"))
    assert tool(ps, "x").rule_id == "a1"


def test_globs_on_principals_targets_and_callers() -> None:
    ps = policy(
        rule(
            "g",
            "allow",
            principals='["team:*", "bob"]',
            actions='["execute_tool"]',
            targets='["search_[ab]?", "read_*"]',
            callers='["research*"]',
        )
    )
    assert tool(ps, "search_a1", principal="team:x", caller="researcher").allowed
    assert tool(ps, "read_file", principal="bob", caller="research").allowed
    assert tool(ps, "search_c1", principal="bob", caller="researcher").rule_id == "default-deny"
    assert tool(ps, "search_a1", principal="carol", caller="researcher").rule_id == "default-deny"
    assert tool(ps, "search_a1", principal="bob", caller="writer").rule_id == "default-deny"
    assert tool(ps, "search_a1", principal="bob", caller=None).rule_id == "default-deny"


def test_globs_are_case_sensitive_and_whole_name() -> None:
    ps = policy(rule("g", "allow", targets='["pay*"]'))
    assert tool(ps, "payment").allowed
    assert not tool(ps, "Payment").allowed
    assert not tool(ps, "prepay").allowed


def test_actions_select_rules() -> None:
    ps = policy(rule("agents", "allow", actions='["invoke_agent"]'))
    assert ps.decide("alice", "invoke_agent", "w", None, None).allowed
    assert tool(ps, "w").rule_id == "default-deny"


def test_unknown_action_at_decision_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown action 'run'"):
        policy(rule("a", "allow")).decide("alice", "run", "x", None, None)


def test_cached_decision_equals_cold_decision() -> None:
    ps = policy(rule("a", "allow", targets='["s*"]'), rule("d", "deny", targets='["sh*"]'))
    first = [tool(ps, t) for t in ("search", "shell", "other")]
    assert [tool(ps, t) for t in ("search", "shell", "other")] == first
    assert [d.rule_id for d in first] == ["a", "d", "default-deny"]


def cond(op_value: str) -> PolicySet:
    return policy(rule("c", "allow", when='{ "args.v" = { ' + op_value + " } }"))


@pytest.mark.parametrize(
    ("condition", "holds", "fails"),
    [
        ("eq = 5", 5, 6),
        ("eq = 5", 5.0, 4.5),
        ('eq = "a"', "a", "b"),
        ("eq = true", True, False),
        ("ne = 5", 6, 5),
        ('in = ["a", "b"]', "b", "c"),
        ("not_in = [1, 2]", 3, 2),
        ("gt = 10", 11, 10),
        ("ge = 10", 10, 9),
        ("lt = 10", 9.5, 10),
        ("le = 10", 10, 11),
        ('gt = "m"', "z", "a"),
        ('matches = "acct-[0-9]+"', "acct-42", "acct-42x"),
    ],
)
def test_each_condition_operator_holds_and_fails(
    condition: str, holds: object, fails: object
) -> None:
    ps = cond(condition)
    assert tool(ps, "t", {"v": holds}).rule_id == "c"
    assert tool(ps, "t", {"v": fails}).rule_id == "default-deny"


def test_all_conditions_of_a_rule_must_hold() -> None:
    ps = policy(
        rule("c", "allow", when='{ "args.a" = { gt = 1, lt = 5 }, "args.b" = { eq = "x" } }')
    )
    assert tool(ps, "t", {"a": 3, "b": "x"}).allowed
    assert not tool(ps, "t", {"a": 7, "b": "x"}).allowed
    assert not tool(ps, "t", {"a": 3, "b": "y"}).allowed


def test_condition_on_missing_argument_denies_with_reason() -> None:
    ps = policy(rule("pay-big", "require_approval", when='{ "args.amount" = { gt = 1000 } }'))
    d = tool(ps, "search", {"query": "x"})
    assert d == Decision(
        "deny", "pay-big", "condition on args.amount: target search takes no argument amount"
    )


@pytest.mark.parametrize(
    ("condition", "value", "reason"),
    [
        (
            "gt = 1000",
            "5000",
            "condition on args.v: cannot compare str '5000' with gt 1000 (number) for target t",
        ),
        (
            "gt = 1",
            True,
            "condition on args.v: cannot compare bool True with gt 1 (number) for target t",
        ),
        (
            'matches = "a.*"',
            3,
            "condition on args.v: cannot compare number 3 with matches 'a.*' (str) for target t",
        ),
        (
            "in = [1, 2]",
            "1",
            "condition on args.v: cannot compare str '1' with in [1, 2] (number) for target t",
        ),
        (
            "eq = 1",
            None,
            "condition on args.v: cannot compare NoneType None with eq 1 (number) for target t",
        ),
    ],
)
def test_type_mismatch_denies_with_reason(condition: str, value: object, reason: str) -> None:
    d = tool(cond(condition), "t", {"v": value})
    assert d == Decision("deny", "c", reason)


def test_conditional_rule_without_bound_args_denies() -> None:
    d = tool(cond("eq = 1"), "t", None)
    assert d == Decision("deny", "c", "condition on args.v: no arguments were bound for target t")


def test_condition_error_beats_unconditional_allow() -> None:
    ps = policy(rule("a", "allow"), rule("c", "allow", when='{ "args.x" = { eq = 1 } }'))
    assert tool(ps, "t", {"y": 1}).effect == "deny"


def test_unconditional_deny_is_not_bypassed_by_conditions() -> None:
    ps = policy(
        rule("d", "deny", targets='["t"]'), rule("c", "allow", when='{ "args.x" = { eq = 1 } }')
    )
    assert tool(ps, "t", {"x": 1}).rule_id == "d"


def test_conditional_deny_and_approval_rank_over_static_allow() -> None:
    ps = policy(
        rule("a", "allow"),
        rule("big", "require_approval", when='{ "args.n" = { gt = 10 } }'),
        rule("huge", "deny", when='{ "args.n" = { gt = 100 } }'),
    )
    assert tool(ps, "t", {"n": 1}).rule_id == "a"
    assert tool(ps, "t", {"n": 50}).rule_id == "big"
    assert tool(ps, "t", {"n": 500}).rule_id == "huge"


def test_uses_args_only_when_a_rule_has_conditions() -> None:
    assert not policy(rule("a", "allow")).uses_args
    assert cond("eq = 1").uses_args


def test_decision_is_frozen() -> None:
    d = tool(policy(rule("a", "allow")), "t")
    with pytest.raises(AttributeError):
        d.effect = "deny"  # type: ignore[misc]


def test_default_policy_allows_demo_and_guards_dangerous_tools() -> None:
    ps = PolicySet.default()
    assert ps.sources == (policies.default_policy_path(),)
    assert ps.decide("anyone", "invoke_agent", "writer", None, None).allowed
    assert tool(ps, "search").allowed
    assert tool(ps, "shell_exec").rule_id == "no-shell-or-delete"
    assert tool(ps, "delete_file").effect == "deny"
    assert tool(ps, "pay_invoice").effect == "require_approval"
    assert tool(ps, "transfer").effect == "require_approval"
    assert ps.budgets.max_steps == 10000
    assert ps.budgets.max_depth == 8
    assert ps.budgets.max_concurrency == 256
    assert ps.budgets.max_wall_seconds == 600

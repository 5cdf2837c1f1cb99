"""The compiled, immutable policy set and its decision procedure.

Semantics (the README's "Policies"): default deny; of the rules that match a
request, any ``deny`` wins, then ``require_approval``, then ``allow``; among rules of the
winning effect the first in load order (files sorted by name, then file order) is named.

Invariants:

* A :class:`PolicySet` never changes after construction; a reload builds a new one. Its
  ``digest`` is SHA-256 over the RFC 8785 form of the merged, validated content, so
  reformatting a file or reordering keys does not change it, and any semantic edit does.
* Globs and regexes are compiled once, at load. A decision costs a dictionary lookup when
  the same (principal, action, target, caller) was seen before and the matching rules have
  no conditions; otherwise a walk over the rules indexed under that action and target.
* Conditions fail closed: a condition naming an argument the target does not take, a
  comparison between values of different kinds (``bool`` is not a number; only exact
  ``int``/``float``/``str``/``bool`` are scalars, so a subclass whose comparisons lie is
  never compared), a non-finite number (NaN, ±inf), a value longer than a ``matches``
  condition evaluates, or a conditional rule decided without bound arguments yields a
  ``deny`` naming the rule and the cause — never a silent non-match.
* ``matches`` runs on RE2 (:mod:`._regex`): linear in the input, whatever the pattern.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from fnmatch import translate
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._util import final
from ..crypto import canonical, decision_view, digest
from ._loader import Merged, load_path, load_text, merge
from ._model import (
    ACTIONS,
    Budgets,
    Decision,
    PolicyDocument,
    PolicyError,
    Rule,
    kind_of,
    parse_rate,
)
from ._regex import Regex, compile_regex

__all__ = ["PolicySet", "default_policy_path"]

_RANK = {"allow": 1, "require_approval": 2, "deny": 3}
_DENY = 3
_INF = float("inf")
_CACHE_MAX = 16384
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_KEY = tuple[str, str, str, str | None]
_Entry = tuple[Decision, int, tuple["_Compiled", ...]]


def default_policy_path() -> Path:
    """The packaged ``tenure/policies/default.toml``."""
    return Path(str(resources.files("tenure.policies").joinpath("default.toml")))


class _Globs:
    """A compiled set of globs: exact names by set membership, the rest by one regex."""

    __slots__ = ("exact", "rx")

    def __init__(self, patterns: list[str]) -> None:
        exact = {p for p in patterns if not any(c in p for c in "*?[")}
        globs = [translate(p) for p in patterns if p not in exact]
        self.exact = frozenset(exact)
        self.rx = re.compile("|".join(globs)) if globs else None

    def __call__(self, name: str) -> bool:
        return name in self.exact or (self.rx is not None and self.rx.match(name) is not None)


def _literal_prefix(pattern: str) -> str:
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:i]
    return pattern


class _TargetIndex:
    """The rules of one action, indexed by exact target name and by glob literal prefix."""

    __slots__ = ("exact", "longest", "prefixed")

    def __init__(self, rules: list[_Compiled]) -> None:
        exact: dict[str, list[_Compiled]] = {}
        prefixed: dict[str, list[tuple[re.Pattern[str] | None, _Compiled]]] = {}
        for c in rules:
            if c.targets is None:  # any target
                prefixed.setdefault("", []).append((None, c))
                continue
            for name in c.targets.exact:
                exact.setdefault(name, []).append(c)
            for prefix, rx in c.target_globs:
                prefixed.setdefault(prefix, []).append((rx, c))
        self.exact = {k: tuple(v) for k, v in exact.items()}
        self.prefixed = {k: tuple(v) for k, v in prefixed.items()}
        self.longest = max((len(k) for k in self.prefixed), default=-1)

    def lookup(self, target: str) -> tuple[_Compiled, ...]:
        """Every rule whose targets match ``target``, in load order."""
        hits = set(self.exact.get(target, ()))
        prefixed = self.prefixed
        for k in range(min(len(target), self.longest) + 1):
            bucket = prefixed.get(target[:k])
            if bucket is not None:
                for rx, c in bucket:
                    if c not in hits and (rx is None or rx.match(target) is not None):
                        hits.add(c)
        return tuple(sorted(hits, key=_index_of))


def _index_of(c: _Compiled) -> int:
    return c.index


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Compiled:
    """One rule, compiled for the hot path."""

    __slots__ = (
        "actions",
        "callers",
        "conditions",
        "decision",
        "id",
        "index",
        "principals",
        "rank",
        "rule",
        "target_globs",
        "targets",
    )

    def __init__(self, index: int, rule: Rule) -> None:
        self.index = index
        self.rule = rule
        self.id = rule.id
        self.rank = _RANK[rule.effect]
        self.principals = _Globs(rule.principals) if rule.principals is not None else None
        self.callers = _Globs(rule.callers) if rule.callers is not None else None
        self.actions = frozenset(rule.actions or ACTIONS)
        self.targets = _Globs(rule.targets) if rule.targets is not None else None
        # Target globs that are not plain names, each with its literal prefix (for indexing).
        self.target_globs = tuple(
            (_literal_prefix(p), re.compile(translate(p)))
            for p in (rule.targets or ())
            if p not in (self.targets.exact if self.targets else ())
        )
        conds: list[tuple[str, str, Any, Regex | None]] = []
        for key, cond in (rule.when or {}).items():
            name = key[len("args.") :]
            for op, operand in cond.operators():
                rx = compile_regex(operand) if op == "matches" else None
                conds.append((name, op, operand, rx))
        self.conditions = tuple(conds)
        reason = {
            "allow": f"allowed by rule {rule.id!r}",
            "deny": f"denied by rule {rule.id!r}",
            "require_approval": f"rule {rule.id!r} requires approval",
        }[rule.effect]
        self.decision = Decision(rule.effect, rule.id, reason)

    def selects(self, principal: str, caller: str | None) -> bool:
        if self.principals is not None and not self.principals(principal):
            return False
        return self.callers is None or (caller is not None and self.callers(caller))

    def check(self, target: str, args: Mapping[str, Any] | None) -> bool | str:
        """True if every condition holds, False if one does not, a reason if one cannot run."""
        if args is None:
            return (
                f"condition on args.{self.conditions[0][0]}: no arguments were bound "
                f"for target {target}"
            )
        for name, op, operand, rx in self.conditions:
            if name not in args:
                return f"condition on args.{name}: target {target} takes no argument {name}"
            value = decision_view(args[name])
            kind = kind_of(value)
            if op == "matches":
                expected = "str"
            elif op in ("in", "not_in"):
                expected = kind_of(operand[0])
            else:
                expected = kind_of(operand)
            if kind != expected:
                return (
                    f"condition on args.{name}: cannot compare {kind} {_short(value)} "
                    f"with {op} {_short(operand)} ({expected}) for target {target}"
                )
            if kind == "number" and not -_INF < value < _INF:
                # NaN compares false with everything and infinities pass every bound on
                # one side: neither may decide a condition, whichever way it would go.
                return (
                    f"condition on args.{name}: {value!r} is not a finite number, and "
                    f"non-finite numbers are never compared ({op} {_short(operand)}, "
                    f"target {target})"
                )
            if rx is not None:
                matched = rx.fullmatch(value)
                if isinstance(matched, str):
                    return f"condition on args.{name}: {matched} (target {target})"
                ok = matched
            elif op == "in":
                ok = value in operand
            elif op == "not_in":
                ok = value not in operand
            else:
                ok = _COMPARE[op](value, operand)
            if not ok:
                return False
        return True


@final
class PolicySet:
    """An immutable, compiled set of policy rules, budgets and rate limits.

    Build one with :meth:`load`, :meth:`from_text` or :meth:`default`; decide with
    :meth:`decide`. Safe to share between tasks: the only mutable state is a memo of
    condition-free results, which is derived from the immutable rules.
    """

    __slots__ = (
        "_approvers",
        "_by_action",
        "_cache",
        "_merged",
        "_origins",
        "_rate_limits",
        "_rule_approvers",
        "_target_cache",
        "budgets",
        "digest",
        "rules",
        "sources",
        "uses_args",
    )

    #: the merged, validated rules in load order
    rules: tuple[Rule, ...]
    #: the merged budgets (fields ``None`` when unlimited)
    budgets: Budgets
    #: ``"sha256:<hex>"`` over the canonical form of the merged set
    digest: str
    #: the files the set was loaded from (empty for :meth:`from_text`)
    sources: tuple[Path, ...]
    #: whether any rule has ``when`` conditions (arguments need binding only then)
    uses_args: bool

    def __init__(self, merged: Merged, sources: tuple[Path, ...]) -> None:
        """Internal: use :meth:`load`, :meth:`from_text` or :meth:`default`."""
        self._merged = merged
        self.rules = merged.rules
        self.budgets = merged.budgets
        self.sources = sources
        self._origins = dict(merged.origins)
        self._approvers = MappingProxyType(dict(merged.approvers))
        self._rule_approvers = {r.id: tuple(r.approvers) for r in merged.rules if r.approvers}
        self._rate_limits = MappingProxyType(
            {k: parse_rate(v) for k, v in merged.rate_limits.items()}
        )
        compiled = [_Compiled(i, r) for i, r in enumerate(merged.rules)]
        self.uses_args = any(c.conditions for c in compiled)
        self._by_action = {
            action: _TargetIndex([c for c in compiled if action in c.actions]) for action in ACTIONS
        }
        self._cache: dict[_KEY, _Entry] = {}
        self._target_cache: dict[tuple[str, str], tuple[_Compiled, ...]] = {}
        content = {
            "version": 1,
            "default": "deny",
            "rules": [r.model_dump(by_alias=True, exclude_none=True) for r in merged.rules],
            "budgets": merged.budgets.model_dump(exclude_none=True),
            "rate_limits": dict(merged.rate_limits),
        }
        if merged.approvers:  # absent when none are declared: older digests stay the same
            content["approvers"] = dict(merged.approvers)
        try:
            self.digest = digest(canonical(content))
        except Exception as exc:  # rfc8785 refuses values the validators should have refused
            where = str(sources[0]) if sources else "<policy>"
            raise PolicyError(where, None, f"policy cannot be canonicalized: {exc}") from exc

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> PolicySet:
        """Load a ``.toml`` file, or a folder of ``*.toml`` files merged in name order."""
        merged = load_path(path)
        return cls(merged, tuple(Path(f.path) for f in merged.files))

    @classmethod
    def from_text(cls, text: str | bytes, source: str = "<text>") -> PolicySet:
        """Load one policy document from text; ``source`` names it in errors."""
        return cls(merge([load_text(text, source)]), ())

    @classmethod
    def default(cls) -> PolicySet:
        """The packaged default policy (:func:`default_policy_path`)."""
        ref = resources.files("tenure.policies").joinpath("default.toml")
        path = default_policy_path()
        return cls(merge([load_text(ref.read_bytes(), str(path))]), (path,))

    def with_approvers(self, approvers: Mapping[str, str]) -> PolicySet:
        """This set with more approvers declared (name -> ``"ed25519:<base64>"``).

        For embedding (a demo, a test harness) where the approvers' keys are known only at
        run time; a deployed policy declares them in its ``[approvers]`` table. A name
        already declared with another key is a :class:`PolicyError`.
        """
        merged = dict(self._approvers)
        for name, text in approvers.items():
            if merged.get(name, text) != text:
                raise PolicyError("<approvers>", None, f"approver {name!r} is already declared")
            merged[name] = text
        doc = PolicyDocument.model_validate({"version": 1, "approvers": merged})
        return PolicySet(
            Merged(
                files=self._merged.files,
                rules=self.rules,
                origins=self._origins,
                budgets=self.budgets,
                rate_limits=self._merged.rate_limits,
                approvers=dict(doc.approvers),
            ),
            self.sources,
        )

    # -- inspection ---------------------------------------------------------------------------

    @property
    def rate_limits(self) -> Mapping[str, tuple[int, int]]:
        """Target name or glob → ``(count, per_seconds)``."""
        return self._rate_limits

    @property
    def approvers(self) -> Mapping[str, str]:
        """Every declared approver: name -> Ed25519 public key (``"ed25519:<base64>"``)."""
        return self._approvers

    def approvers_for(self, rule_id: str) -> dict[str, str]:
        """Who may answer a request held by ``rule_id``: its own list, else every approver."""
        names = self._rule_approvers.get(rule_id)
        if names is None:
            return dict(self._approvers)
        return {name: self._approvers[name] for name in names}

    def origin(self, rule_id: str) -> str:
        """``"file:line"`` where the rule was defined (``KeyError`` for an unknown id)."""
        path, line = self._origins[rule_id]
        return f"{path}:{line}" if line is not None else path

    def __repr__(self) -> str:
        return f"<PolicySet {len(self.rules)} rules {self.digest[:19]}>"

    # -- decisions ----------------------------------------------------------------------------

    def decide(
        self,
        principal: str,
        action: str,
        target: str,
        caller: str | None,
        args: Mapping[str, Any] | None,
    ) -> Decision:
        """Decide one request.

        Args:
            principal: who the run acts for.
            action: one of :data:`ACTIONS` (anything else: ``ValueError``).
            target: the agent, tool or model name.
            caller: for tools and model calls, the name of the calling agent (``None`` if
                none).
            args: the target's bound parameters with defaults applied, or ``None`` when
                not bound (then a matching rule with conditions denies).
        """
        key = (principal, action, target, caller)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._static(key)
        static, rank, conditional = entry
        if rank == _DENY or not conditional:
            return static
        best, best_rank = static, rank
        for c in conditional:
            outcome = c.check(target, args)
            if outcome is True:
                if c.rank == _DENY:
                    return c.decision
                if c.rank > best_rank:
                    best, best_rank = c.decision, c.rank
            elif outcome is not False:
                return Decision("deny", c.id, str(outcome))
        return best

    def _candidates(self, action: str, target: str) -> tuple[_Compiled, ...]:
        found = self._target_cache.get((action, target))
        if found is not None:
            return found
        index = self._by_action.get(action)
        if index is None:
            raise ValueError(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
        found = index.lookup(target)
        if len(self._target_cache) >= _CACHE_MAX:
            self._target_cache.clear()
        self._target_cache[(action, target)] = found
        return found

    def _static(self, key: _KEY) -> _Entry:
        principal, action, target, caller = key
        best: Decision | None = None
        best_rank = 0
        conditional: list[_Compiled] = []
        for c in self._candidates(action, target):
            if not c.selects(principal, caller):
                continue
            if c.conditions:
                conditional.append(c)
            elif c.rank > best_rank:
                best, best_rank = c.decision, c.rank
                if best_rank == _DENY:
                    break
        if best is None:
            who = f", caller {caller!r}" if caller is not None else ""
            best = Decision(
                "deny",
                "default-deny",
                f"no rule matched principal {principal!r}, {action} {target!r}{who}",
            )
        entry: _Entry = (best, best_rank, tuple(conditional))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = entry
        return entry

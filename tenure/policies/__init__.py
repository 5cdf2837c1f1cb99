"""The policy engine and the policy file format.

Load a set with :meth:`PolicySet.load` (a ``.toml`` file or a folder of them),
:meth:`PolicySet.from_text` or :meth:`PolicySet.default`; decide with
:meth:`PolicySet.decide`; count a run's budgets and rate limits with
:class:`BudgetTracker`. Any fault in a policy file is a :class:`PolicyError` reading
``file:line: reason``.
"""

from __future__ import annotations

from ._budget import BudgetTracker, Violation
from ._engine import PolicySet, default_policy_path
from ._model import Budgets, Condition, Decision, PolicyError, Rule

__all__ = [
    "BudgetTracker",
    "Budgets",
    "Condition",
    "Decision",
    "PolicyError",
    "PolicySet",
    "Rule",
    "Violation",
    "default_policy_path",
]

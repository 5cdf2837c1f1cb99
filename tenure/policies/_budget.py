"""Per-run budgets and rate limits.

One :class:`BudgetTracker` per run, used from the run's event-loop thread (it is not
thread-safe). Every check returns ``None`` when the run is within its limits, or a
``(check, reason)`` pair — ``("budget.max_steps", "run exceeded max_steps=3 (step 4 of
agent:writer)")`` — that the runtime turns into a fail-closed ``PolicyDenied``. Messages
state the rule, the limit and the actual value.

Invariants:

* Counters only grow; a step is counted before it is checked, so the step that crosses a
  limit is the one refused.
* ``depth`` is refused when ``depth > max_depth`` (the runtime decides where depth 0 is).
* ``enter`` refuses (and does not count) a task that would make the number of live
  governed tasks exceed ``max_concurrency``; ``leave`` without ``enter`` is a caller error.
* Rate limits are sliding windows: at most N calls in any window of the period, per key
  of ``[rate_limits]``. A glob key is one window shared by every target it matches; a target
  matching several keys is counted by each. A refused call does not use up the window.
  Each check is O(1) amortized (a deque of at most N timestamps).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from fnmatch import translate

from .._checks import check_usage
from .._util import final
from ._model import Budgets, check_glob

__all__ = ["BudgetTracker", "Violation"]

#: ``(check, reason)``: the name of the exceeded limit and a message stating it
Violation = tuple[str, str]

_UNIT = {1: "s", 60: "m", 3600: "h"}


class _Window:
    __slots__ = ("count", "key", "label", "per", "stamps")

    def __init__(self, key: str, count: int, per: float) -> None:
        self.key = key
        self.count = count
        self.per = per
        self.stamps: deque[float] = deque()
        unit = _UNIT.get(int(per)) if per == int(per) else None
        self.label = f"{count}/{unit}" if unit else f"{count}/{per:g}s"

    def admit(self, now: float, task: str) -> Violation | None:
        stamps = self.stamps
        horizon = now - self.per
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if len(stamps) >= self.count:
            return (
                f"ratelimit.{self.key}",
                f"rate limit {self.key}={self.label} exceeded: call {len(stamps) + 1} "
                f"within {self.per:g}s of {task}",
            )
        stamps.append(now)
        return None


_KIND_OF_ACTION = {"invoke_agent": "agent", "execute_tool": "tool", "call_model": "model"}


def _task(action: str, target: str) -> str:
    return f"{_KIND_OF_ACTION.get(action, action)}:{target}"


@final
class BudgetTracker:
    """Counts one run's steps, tool calls, depth, concurrency, usage and wall time."""

    def __init__(
        self,
        budgets: Budgets,
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = budgets
        self._clock = clock
        self.started = clock()
        self.steps = 0
        self.tool_calls = 0
        self.live = 0
        self.tokens = 0
        self.cost = 0.0
        self._exact: dict[str, list[_Window]] = {}
        self._globs: list[tuple[re.Pattern[str], _Window]] = []
        self._by_target: dict[str, tuple[_Window, ...]] = {}
        for key, (count, per) in (rate_limits or {}).items():
            if count <= 0 or per <= 0:
                raise ValueError(f"rate limit {key!r}: count and period must be positive")
            window = _Window(key, count, per)
            if any(c in key for c in "*?["):
                self._globs.append((re.compile(translate(check_glob(key))), window))
            else:
                self._exact.setdefault(key, []).append(window)

    def _windows(self, target: str) -> tuple[_Window, ...]:
        found = self._by_target.get(target)
        if found is None:
            hits = list(self._exact.get(target, ()))
            hits.extend(w for rx, w in self._globs if rx.match(target))
            found = self._by_target[target] = tuple(hits)
        return found

    def on_step(self, action: str, target: str, depth: int) -> Violation | None:
        """Count one agent invocation or tool call and check every limit it touches."""
        b = self.budgets
        self.steps += 1
        # The task's name (``_task``) is built only for a refusal: this runs for every step.
        if b.max_depth is not None and depth > b.max_depth:
            return (
                "budget.max_depth",
                f"run exceeded max_depth={b.max_depth} (depth {depth} of {_task(action, target)})",
            )
        if b.max_steps is not None and self.steps > b.max_steps:
            return (
                "budget.max_steps",
                f"run exceeded max_steps={b.max_steps} (step {self.steps} of "
                f"{_task(action, target)})",
            )
        if action == "execute_tool":
            self.tool_calls += 1
            if b.max_tool_calls is not None and self.tool_calls > b.max_tool_calls:
                return (
                    "budget.max_tool_calls",
                    f"run exceeded max_tool_calls={b.max_tool_calls} "
                    f"(tool call {self.tool_calls} of {_task(action, target)})",
                )
        windows = self._windows(target) if (self._exact or self._globs) else ()
        if windows:
            now = self._clock()
            task = _task(action, target)
            for w in windows:
                refused = w.admit(now, task)
                if refused is not None:
                    return refused
        return None

    def enter(self) -> Violation | None:
        """Admit one more live governed task, unless that would exceed max_concurrency."""
        limit = self.budgets.max_concurrency
        if limit is not None and self.live + 1 > limit:
            return (
                "budget.max_concurrency",
                f"run exceeded max_concurrency={limit} ({self.live + 1} live governed tasks)",
            )
        self.live += 1
        return None

    def leave(self) -> None:
        """A live governed task finished."""
        if self.live <= 0:
            raise RuntimeError("BudgetTracker.leave() without a matching enter()")
        self.live -= 1

    def record_usage(self, tokens: int = 0, cost: float = 0.0) -> Violation | None:
        """Add model usage; check max_tokens and max_cost.

        Refuses (``TypeError``/``ValueError``, counters untouched) anything but a
        non-negative integer of tokens and a finite, non-negative cost: one NaN added to
        ``cost`` would make every later ``cost > max_cost`` false, switching the budget off.
        """
        tokens, cost = check_usage(tokens, cost)
        self.tokens += tokens
        self.cost += cost
        b = self.budgets
        if b.max_tokens is not None and self.tokens > b.max_tokens:
            return (
                "budget.max_tokens",
                f"run exceeded max_tokens={b.max_tokens} (used {self.tokens})",
            )
        if b.max_cost is not None and self.cost > b.max_cost:
            return (
                "budget.max_cost",
                f"run exceeded max_cost={b.max_cost:g} (spent {self.cost:g})",
            )
        return None

    def before_model_call(self, reserve_tokens: int | None = None) -> Violation | None:
        """Whether a model call fits what is left of max_tokens / max_cost, before it is sent.

        ``reserve_tokens`` is the most the call may use (its requested output limit); without
        it, any call needs at least one token. Spent budgets refuse the call, not the usage.
        """
        b = self.budgets
        need = 1 if reserve_tokens is None else reserve_tokens
        if b.max_tokens is not None and self.tokens + need > b.max_tokens:
            asked = "" if reserve_tokens is None else f" + up to {reserve_tokens} requested"
            return (
                "budget.max_tokens",
                f"a model call would exceed max_tokens={b.max_tokens} (used {self.tokens}{asked})",
            )
        if b.max_cost is not None and self.cost >= b.max_cost:
            return (
                "budget.max_cost",
                f"a model call would exceed max_cost={b.max_cost:g} (spent {self.cost:g})",
            )
        return None

    def check_wall(self, now: float | None = None) -> Violation | None:
        """Check max_wall_seconds against ``now`` (default: the tracker's clock)."""
        limit = self.budgets.max_wall_seconds
        if limit is None:
            return None
        elapsed = (self._clock() if now is None else now) - self.started
        if elapsed > limit:
            return (
                "budget.max_wall_seconds",
                f"run exceeded max_wall_seconds={limit:g} (elapsed {elapsed:.3f}s)",
            )
        return None

"""A governed model call (:class:`tenure.ModelCall`) and the usage it reports.

Usage is checked once, where it enters (:meth:`Usage.checked`): integer counts (never a
``bool``), a finite non-negative cost, string names. The
call itself is a foreign step (``_foreign``): action ``call_model``, target the model name.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..._checks import check_usage

if TYPE_CHECKING:
    from ._loop_bridge import LoopBridge
    from ._state import Step

__all__ = ["CallHandle", "GovernedModelCall", "Usage"]


class CallHandle(Protocol):
    """The foreign step a model call is (``_foreign.CallHandle``)."""

    step: Step

    def run_stopped(self) -> bool:
        """Whether the call's run has stopped."""
        ...

    async def begin(self, call_id: str | None, framework: str, kind: str) -> object | None:
        """Decide and record the call; what a call id that already ran ended with."""
        ...

    def finish(
        self, error: BaseException | None, result: Any = None, usage: Usage | None = None
    ) -> Any:
        """Record how the call ended; raises the run's stop."""
        ...

    def current_span(self) -> contextlib.AbstractContextManager[None]:
        """The call's span as the current OpenTelemetry span."""
        ...


@dataclass(frozen=True, slots=True)
class Usage:
    """What model calls used (build it with :meth:`checked`)."""

    tokens: int
    input_tokens: int
    output_tokens: int
    cost: float
    model: str
    provider: str

    @staticmethod
    def checked(
        *,
        tokens: object = None,
        input_tokens: object = 0,
        output_tokens: object = 0,
        cost: object = 0.0,
        model: object = "",
        provider: object = "",
    ) -> Usage:
        """A :class:`Usage`; ``TypeError`` / ``ValueError`` name the field, value and rule.

        Counts and cost follow :func:`~tenure._checks.check_usage` (converted once, checked
        after the conversion, so a value whose conversion lies still ends up plain).
        ``tokens`` (the total) defaults to input plus output; given with them, it may not
        be smaller than their sum.
        """
        inp = _count("input_tokens", input_tokens)
        out = _count("output_tokens", output_tokens)
        total, spent = check_usage(inp + out if tokens is None else tokens, cost)
        if total < inp + out:
            raise ValueError(
                f"usage tokens={total} is less than input_tokens + output_tokens = {inp + out}"
            )
        return Usage(total, inp, out, spent, _text("model", model), _text("provider", provider))


def _count(name: str, value: object) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if not 0 <= count <= 2**53 - 1:
        raise ValueError(f"{name} must be between 0 and 2**53-1, got {count}")
    return count


def _text(name: str, value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    return value


class GovernedModelCall:
    """A governed request to a model (:class:`tenure.ModelCall`; ``ctx.model_call(...)``).

    Opening it checks the run's token and cost budgets (a call they have no room for stops
    the run before anything is sent), then decides (action ``call_model``, target the model
    name) and records the call. ``async with`` runs the block in a scope the run's stop
    cancels; :meth:`open` / :meth:`close` do the same for a stream read across many awaits
    (no scope: the stream checks :attr:`stopped` at each chunk); a plain ``with`` is for a
    sync client in a worker thread (the decision and records are made on the event loop).
    """

    __slots__ = (
        "_bridge",
        "_call",
        "_call_id",
        "_new_call",
        "_scope",
        "_stack",
        "_usage",
        "model",
        "provider",
    )

    def __init__(
        self,
        new_call: Callable[[], CallHandle],
        scope: Callable[[], contextlib.AbstractContextManager[anyio.CancelScope]],
        model: str,
        provider: str,
        call_id: str | None,
        bridge: LoopBridge,
    ) -> None:
        self._new_call = new_call
        self._bridge = bridge
        self._scope = scope
        self._call_id = call_id
        self._call: CallHandle | None = None
        self._stack: contextlib.ExitStack | None = None
        self._usage: Usage | None = None
        self.model = model
        self.provider = provider

    @property
    def step_id(self) -> str:
        """The governed step's id (empty before :meth:`open`)."""
        return self._call.step.id if self._call is not None else ""

    @property
    def stopped(self) -> bool:
        """Whether the run has stopped (a stream must end at once)."""
        call = self._call
        return call is not None and call.run_stopped()

    async def open(self) -> None:
        """Check the budgets, decide and record the call (raises the denial or the stop)."""
        if self._call is not None:
            return
        call = self._new_call()
        if await call.begin(self._call_id, self.provider or "model", "model") is not None:
            raise RuntimeError(f"model call {self._call_id!r} already ran in this run")
        self._call = call

    def record_usage(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float = 0.0,
        response_model: str | None = None,
    ) -> None:
        """What the response used; recorded and counted when the call ends."""
        if self._call is None:
            raise RuntimeError("record_usage before the model call was opened")
        self._usage = Usage.checked(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            model=response_model if response_model is not None else self.model,
            provider=self.provider,
        )

    def close(self, error: BaseException | None = None, result: Any = None) -> None:
        """Record how the call ended, with its usage; raises the stop if the run stopped."""
        call, self._call = self._call, None
        if call is not None:
            call.finish(error, result, self._usage)

    def __enter__(self) -> GovernedModelCall:
        self._bridge.refuse_loop_thread(
            "`with ctx.model_call(...)`", "on the event loop use `async with ctx.model_call(...)`"
        )
        self._bridge.call(self.open)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bridge.call(self.close, exc)

    async def __aenter__(self) -> GovernedModelCall:
        await self.open()
        assert self._call is not None
        stack = contextlib.ExitStack()
        stack.enter_context(self._scope())
        stack.enter_context(self._call.current_span())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._stack = self._stack, None
        assert stack is not None
        if stack.__exit__(exc_type, exc, tb):  # the run's stop cancelled the request
            cancelled = anyio.get_cancelled_exc_class()(f"call to {self.model}: the run ended")
            self.close(cancelled)  # raises the stop
            raise cancelled
        self.close(exc)
        return False

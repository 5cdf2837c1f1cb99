"""Governed calls made by code Tenure did not write: framework tools and model requests.

Adapters (MCP proxy, pydantic-ai, LangGraph, OpenAI Agents) and the model-call helpers reach
the engine through ``Context.govern`` / ``Context.govern_sync`` / ``Context.model_call``,
which land here. A foreign call is a step like a ``ctx.call``: the same budgets, scope
check, policy decision, approval wait, ledger records and span (the step layer,
:class:`~._steps.GovernedSteps`, does all of that); what differs is that its body is a
callable the framework hands over, run in whatever task (or thread) the framework runs it in.

Invariants:

- Nothing of the body runs before its decision and its ``step.start`` are recorded.
- An async body runs inside a cancel scope that the run's stop cancels (it is one of the
  run's ``cancel_scopes``), so a body in a task outside the run's own cancel scope (the MCP
  proxy's request handlers, a framework's worker tasks) stops too. A sync body in a worker
  thread cannot be interrupted: what it returns after the stop is discarded and the stop is
  raised instead.
- The outcome is recorded however the body ends: its value (a digest), its error, the
  framework's cancellation, or the run's stop. A value that arrives after the stop is
  discarded, never returned. A run that ends waits, for at most its cleanup grace, for the
  calls still unwinding in other tasks; those it stops waiting for are recorded abandoned.
- A call id is one logical call. Re-entering an id whose call completed or was denied
  returns that outcome again: no second decision, budget count, record or execution
  (LangGraph re-executes a node after an interrupt). An id still running is refused. A call
  that ended in an error or was cancelled may run again, as a new step.
- Model usage is exact non-negative ints and a finite non-negative cost; it feeds the token
  and cost budgets, and a model call the budget has no room left for stops the run before
  anything is sent.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import anyio
import anyio.lowlevel
from opentelemetry import context as otel_context
from opentelemetry import trace

from ..._errors import PolicyDenied
from ...lineage._spans import SpanHandle
from ._loop_bridge import LoopBridge
from ._model_call import GovernedModelCall, Usage
from ._state import ForeignTarget, Step

if TYPE_CHECKING:
    from ..._errors import GovernanceViolation
    from ...policies import BudgetTracker
    from ._control import RunServices

__all__ = ["ForeignCalls", "GovernedModelCall", "StepHost", "Usage"]

T = TypeVar("T")

#: finished calls whose outcome is kept for re-entry, per run (older ids are refused)
KEPT_OUTCOMES: Final = 1024
_YIELD_EVERY: Final = 64  # foreign steps between forced turns of the event loop

_Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Outcome:
    value: Any = None
    error: PolicyDenied | None = None

    def replay(self) -> Any:
        if self.error is not None:
            raise self.error.with_traceback(None)
        return self.value


class StepHost(Protocol):
    """What foreign calls use of their run: its step layer (``_steps.GovernedSteps``)."""

    id: str
    principal: str
    services: RunServices
    tracker: BudgetTracker
    stop: GovernanceViolation | None
    cancelled_reason: str | None
    cancel_scopes: set[anyio.CancelScope]

    def ensure_live(self, caller: Step | None, gate: Any = None, what: str = "") -> None:
        """Raise the stop (or the caller's failed check) before a new step starts."""
        ...

    def stop_error(self) -> GovernanceViolation:
        """The run's stop, ready to raise."""
        ...

    def new_step(
        self,
        action: str,
        target: ForeignTarget,
        parent: Step | None,
        lease: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Step:
        """A new step of the run."""
        ...

    async def authorize(self, step: Step, missing_scopes: frozenset[str]) -> int:
        """Decide ``step``; its approval's index (-1: allowed outright)."""
        ...

    def enter(self, step: Step) -> None:
        """An allowed step becomes live."""
        ...

    def leave(self, step: Step) -> None:
        """A step ended."""
        ...

    async def start(self, step: Step, approval: int) -> None:
        """Record the step's start (with a shared backend, committed with its debit)."""
        ...

    def over_budget(self, check: str, reason: str, step: Step) -> GovernanceViolation:
        """Stop the run: ``step`` exceeded a budget."""
        ...

    def end_record(self, step: Step, error: BaseException | None, result: Any = None) -> None:
        """Record how a step ended."""
        ...

    def record_usage(self, step: Step, usage: Usage) -> None:
        """Record and count usage."""
        ...


class ForeignCalls:
    """One run's foreign calls: those still running, and the outcomes kept by call id."""

    def __init__(self, run: StepHost) -> None:
        self.run = run
        self._done: OrderedDict[_Key, _Outcome] = OrderedDict()
        self._forgotten: set[_Key] = set()
        self._live: set[_Key] = set()
        self._running: set[ForeignCall] = set()
        self._idle = anyio.Event()
        self._idle.set()
        # The span current where the run started (the one it joined): seen again from a
        # task outside the run, it is no framework span to nest under.
        outer = trace.get_current_span().get_span_context()
        self.outer_span_id = outer.span_id if outer.is_valid else None
        self.bridge = LoopBridge(lambda: run.stop_error() if run.stop is not None else None)

    # -- tool calls -----------------------------------------------------------------------

    async def govern(
        self,
        caller: Step,
        name: str,
        args: Mapping[str, Any] | None,
        body: Callable[[], Awaitable[T]],
        *,
        call_id: str | None,
        framework: str,
        scopes: frozenset[str],
        tool_type: str,
    ) -> T:
        """Decide and record a framework's tool call, run ``body``, record how it ended."""
        call = ForeignCall(self, caller, "execute_tool", ForeignTarget("tool", name, scopes), args)
        replay = await call.begin(call_id, framework, tool_type)
        if replay is not None:
            return replay.replay()  # type: ignore[no-any-return]
        try:
            with self.scope() as scope, call.current_span():
                result = await body()
        except BaseException as exc:
            call.finish(exc)
            raise
        if scope.cancelled_caught:  # the run's stop (or its cancellation) ended the body
            cancelled = anyio.get_cancelled_exc_class()(f"{name} was cancelled: the run ended")
            call.finish(cancelled)
            raise cancelled
        return call.finish(None, result)  # type: ignore[no-any-return]

    def govern_sync(
        self,
        caller: Step,
        name: str,
        args: Mapping[str, Any] | None,
        body: Callable[[], T],
        *,
        call_id: str | None,
        framework: str,
        scopes: frozenset[str],
        tool_type: str,
    ) -> T:
        """:meth:`govern` for a sync framework calling from a worker thread."""
        bridge = self.bridge
        bridge.refuse_loop_thread(
            "govern_sync",
            "call a sync framework (e.g. graph.invoke) in a worker thread, "
            "`await anyio.to_thread.run_sync(...)`, or use its async path (ainvoke)",
        )
        call = ForeignCall(self, caller, "execute_tool", ForeignTarget("tool", name, scopes), args)
        replay = bridge.call(call.begin, call_id, framework, tool_type)
        if replay is not None:
            return replay.replay()  # type: ignore[no-any-return]
        try:
            with call.current_span():
                result = body()
        except BaseException as exc:
            bridge.call(call.finish, exc)
            raise
        return bridge.call(call.finish, None, result)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope the run's stop cancels (already cancelled if it stopped)."""
        run = self.run
        scope = anyio.CancelScope()
        if run.stop is not None or run.cancelled_reason is not None:
            scope.cancel()
        run.cancel_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            run.cancel_scopes.discard(scope)

    # -- model calls and usage ------------------------------------------------------------

    def model_call(
        self,
        caller: Step,
        model: str,
        *,
        provider: str,
        call_id: str | None,
        max_tokens: int | None,
    ) -> GovernedModelCall:
        """A governed request to ``model`` (see :class:`GovernedModelCall`)."""
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if not isinstance(provider, str):
            raise TypeError(f"provider must be a str, got {provider!r}")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens <= 0):
            raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")

        def new_call() -> ForeignCall:
            run = self.run
            run.ensure_live(caller, None, f"model:{model}")
            over = run.tracker.before_model_call(max_tokens)
            if over is not None:
                check, reason = over
                raise run.over_budget(check, f"{reason}; the call to {model} was not sent", caller)
            target = ForeignTarget("model", model, frozenset())
            return ForeignCall(self, caller, "call_model", target, {"provider": provider})

        return GovernedModelCall(new_call, self.scope, model, provider, call_id, self.bridge)

    def report_usage(
        self,
        step: Step,
        *,
        tokens: object,
        cost: object,
        model: object = "",
        provider: object = "",
        input_tokens: object = 0,
        output_tokens: object = 0,
    ) -> None:
        """Usage reported by hand (``ctx.record_usage``): checked, recorded, counted."""
        usage = Usage.checked(
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            model=model,
            provider=provider,
        )
        self.run.ensure_live(step)
        self.run.record_usage(step, usage)

    # -- the run's end --------------------------------------------------------------------

    async def drain(self) -> None:
        """At the run's end: let calls in other tasks record how they ended (bounded by the
        cleanup grace); the rest are recorded abandoned with the run's live steps."""
        if self._running:
            with anyio.move_on_after(self.run.services.config.cleanup_grace):
                await self._idle.wait()
        for call in list(self._running):
            call.abandon()

    def started(self, call: ForeignCall) -> None:
        """``call``'s body is about to run."""
        self._running.add(call)
        if self._idle.is_set():
            self._idle = anyio.Event()

    def ended(self, call: ForeignCall) -> None:
        """``call`` ended (or was abandoned)."""
        self._running.discard(call)
        if not self._running:
            self._idle.set()

    # -- call ids -------------------------------------------------------------------------

    def claim(self, key: _Key) -> _Outcome | None:
        """The kept outcome of call ``key``, or ``None`` after marking it running."""
        done = self._done.get(key)
        if done is not None:
            return done
        if key in self._forgotten:
            raise RuntimeError(
                f"{key[0]} call {key[1]!r} already ran in this run and its outcome is no longer "
                f"kept (only the last {KEPT_OUTCOMES} are); it is not run twice"
            )
        if key in self._live:
            raise RuntimeError(f"{key[0]} call {key[1]!r} is already running in this run")
        self._live.add(key)
        return None

    def settle(self, key: _Key, outcome: _Outcome | None) -> None:
        """Call ``key`` is over: keep ``outcome`` for re-entry (``None``: it may run again)."""
        self._live.discard(key)
        if outcome is None:
            return
        self._done[key] = outcome
        if len(self._done) > KEPT_OUTCOMES:
            old, _ = self._done.popitem(last=False)
            self._forgotten.add(old)


class ForeignCall:
    """One foreign step: decided and started by :meth:`begin`, ended by :meth:`finish`."""

    __slots__ = ("_calls", "_ended", "_key", "run", "step")

    def __init__(
        self,
        calls: ForeignCalls,
        caller: Step,
        action: str,
        target: ForeignTarget,
        args: Mapping[str, Any] | None,
    ) -> None:
        if not isinstance(target.name, str) or not target.name:
            raise ValueError(f"a governed call needs a non-empty name, got {target.name!r}")
        self._calls = calls
        self.run = calls.run
        self._key: _Key | None = None
        self._ended = False
        kwargs = dict(args) if args is not None else {}
        self.step = self.run.new_step(action, target, caller, caller.lease, (), kwargs)

    async def begin(self, call_id: str | None, framework: str, kind: str) -> _Outcome | None:
        """Decide, record, wait for an approval; the kept outcome when ``call_id`` ran."""
        run, step = self.run, self.step
        caller = step.parent
        assert caller is not None
        run.ensure_live(caller, None, step.target.qualified)
        if call_id is not None:
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"call_id must be a non-empty string, got {call_id!r}")
            self._key = (framework or "foreign", call_id)
            replay = self._calls.claim(self._key)
            if replay is not None:
                caller.span.event("tenure.call.replayed", {"call": call_id, "framework": framework})
                return replay
        step.call = call_id or ""
        step.framework = framework or "foreign"
        try:
            await self._start(kind)
        except PolicyDenied as exc:
            if self._key is not None:
                # A refused call stays refused on re-entry; a stop is not an outcome to keep.
                self._calls.settle(self._key, _Outcome(error=exc) if run.stop is None else None)
            raise
        except BaseException:
            if self._key is not None:
                self._calls.settle(self._key, None)
            raise
        return None

    async def _start(self, kind: str) -> None:
        run, step = self.run, self.step
        caller = step.parent
        assert caller is not None
        if int(step.id) % _YIELD_EVERY == 0:
            await anyio.lowlevel.checkpoint()
        missing = step.target.scopes - caller.lease.lease.scope_set
        approval = await run.authorize(step, missing)
        run.enter(step)
        try:
            parent = self._parent_span()
            lineage = run.services.lineage
            if step.action == "call_model":
                provider = step.kwargs.get("provider", "")
                step.span = lineage.start_model(
                    parent,
                    step.target.name,
                    provider=provider if isinstance(provider, str) else "",
                    run_id=run.id,
                    step_id=step.id,
                    lease_id=caller.lease.id,
                    principal=run.principal,
                )
            else:
                step.span = lineage.start_tool(
                    parent,
                    step.target.name,
                    run_id=run.id,
                    call_id=step.call or step.id,
                    lease_id=caller.lease.id,
                    principal=run.principal,
                    tool_type=kind,
                    framework=step.framework,
                )
            step.span.set_decision("approved" if step.approved else "allow", step.rule)
            await run.start(step, approval)
        except BaseException:
            run.leave(step)
            raise
        self._calls.started(self)

    def _parent_span(self) -> SpanHandle:
        """The framework's span current here, to nest under; else the calling step's."""
        caller = self.step.parent
        assert caller is not None
        sc = trace.get_current_span().get_span_context()
        if not sc.is_valid or sc.span_id == self._calls.outer_span_id:
            return caller.span
        if f"{sc.span_id:016x}" == caller.span.span_id:
            return caller.span
        return SpanHandle.borrowed(trace.get_current_span())

    @contextlib.contextmanager
    def current_span(self) -> Iterator[None]:
        """Make this call's span the current OpenTelemetry span around the body."""
        token = otel_context.attach(self.step.span.otel_context())
        try:
            yield
        finally:
            otel_context.detach(token)

    def finish(
        self, error: BaseException | None, result: Any = None, usage: Usage | None = None
    ) -> Any:
        """Record how the body ended; return its value, or raise the run's stop."""
        run, step = self.run, self.step
        if error is None and run.stop is not None:
            error = run.stop  # a value that arrives after the stop is discarded
        over: BaseException | None = None
        try:
            if not self._ended:
                self._ended = True
                if usage is not None:
                    step.span.set_usage(usage.input_tokens, usage.output_tokens, usage.model)
                    try:
                        run.record_usage(step, usage)
                    except PolicyDenied as exc:  # over budget: the run is stopping
                        over = exc
                run.end_record(step, error, result)
                run.leave(step)
        finally:
            self._calls.ended(self)
            if self._key is not None:
                kept = _Outcome(result) if error is None and over is None else None
                self._calls.settle(self._key, kept)
        if run.stop is not None:
            # However the body ended, the stop is what its caller must see.
            raise run.stop_error() from None
        return result

    def run_stopped(self) -> bool:
        """Whether the run has stopped."""
        return self.run.stop is not None

    def abandon(self) -> None:
        """The run ended while this call's body kept running: it is recorded abandoned with
        the run's live steps, and nothing more is written for it when it ends."""
        self._ended = True
        self._calls.ended(self)

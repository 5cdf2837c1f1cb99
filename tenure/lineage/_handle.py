"""Span handles: one run, agent, tool or model span as the runtime holds it.

A :class:`SpanHandle` carries the W3C ids every ledger record names (computed once) and,
with a recording pipeline, the SDK span it wraps; without one it is a light id holder whose
setters do nothing. :data:`NOOP_SPAN` is the handle of "no span at all". Handles are made by
:class:`~._spans.Lineage`; a fault in a user's span processor never fails a run
(:func:`lineage_fault` logs it once and the span degrades).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ._names import (
    ATTR_CHECK,
    ATTR_DECISION,
    ATTR_ERROR_TYPE,
    ATTR_RESPONSE_MODEL,
    ATTR_RULE_ID,
    ATTR_USAGE_INPUT_TOKENS,
    ATTR_USAGE_OUTPUT_TOKENS,
    error_type,
)

__all__ = ["NOOP_SPAN", "STATUS_DESCRIPTION_MAX_CHARS", "SpanHandle", "lineage_fault"]

STATUS_DESCRIPTION_MAX_CHARS: Final = 512

_log = logging.getLogger("tenure.lineage")
_EMPTY_CONTEXT: Final = Context()
_warned: list[bool] = []


def lineage_fault(what: str) -> None:
    # Best effort: the first fault is logged with its traceback, later ones at debug level.
    if not _warned:
        _warned.append(True)
        _log.warning("lineage %s failed; spans degrade, the run goes on", what, exc_info=True)
    else:
        _log.debug("lineage %s failed", what, exc_info=True)


def _error_description(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    text = reason if isinstance(reason, str) and reason else str(error)
    return text[:STATUS_DESCRIPTION_MAX_CHARS]


class SpanHandle:
    """One run, agent or tool span, as the runtime sees it.

    ``trace_id`` (32 hex) and ``span_id`` (16 hex) are plain attributes, computed once, for
    the ledger records. With a recording pipeline the handle wraps an SDK span; without one
    it only holds ids, and the setters are no-ops. Handles are created by :class:`Lineage`.
    """

    __slots__ = ("_ctx", "_ended", "_span", "_span_context", "span_id", "trace_id")

    trace_id: str
    span_id: str

    def __init__(
        self, span: Span | None, span_context: SpanContext | None, trace_id: str = ""
    ) -> None:
        """``trace_id``: the hex form of ``span_context.trace_id`` when the caller has it
        (a child's trace is its parent's: formatting 128 bits per step is not free)."""
        self._span = span
        self._span_context = span_context
        self._ctx: Context | None = None
        self._ended = False
        if span_context is None:
            self.trace_id = ""
            self.span_id = ""
        else:
            self.trace_id = trace_id or f"{span_context.trace_id:032x}"
            self.span_id = f"{span_context.span_id:016x}"

    @classmethod
    def borrowed(cls, span: Span) -> SpanHandle:
        """A handle on someone else's span (a framework's), to parent spans under: it is
        never set or ended through this handle."""
        handle = cls(span, span.get_span_context())
        handle._ended = True
        return handle

    @property
    def is_recording(self) -> bool:
        """Whether attributes and events set on this handle go anywhere."""
        return self._span is not None and self._span.is_recording()

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` has been called."""
        return self._ended

    @property
    def span_context(self) -> SpanContext | None:
        """The OpenTelemetry span context (``None`` for :data:`NOOP_SPAN`)."""
        return self._span_context

    def otel_context(self) -> Context:
        """An OpenTelemetry ``Context`` whose current span is this one.

        Attach it (``opentelemetry.context.attach``) around user code so that the user's own
        instrumentation (HTTP clients, LLM SDKs) nests under this span. Cached.
        """
        ctx = self._ctx
        if ctx is None:
            sc = self._span_context
            if sc is None:
                ctx = _EMPTY_CONTEXT
            else:
                span = self._span if self._span is not None else NonRecordingSpan(sc)
                ctx = trace.set_span_in_context(span, _EMPTY_CONTEXT)
            self._ctx = ctx
        return ctx

    def current(self) -> _Current:
        """``with handle.current():`` — this span is the current OpenTelemetry span inside.

        The runtime wraps every agent and tool body in it, so that instrumented libraries
        (HTTP clients, database drivers, LLM SDKs) called there join the run's trace, with
        the SDK or with light spans alike.
        """
        return _Current(self.otel_context())

    def make_current(self) -> None:
        """Make this span the current OpenTelemetry span for the rest of the running task.

        For a task that ends with its step (an agent body's own task): nothing runs in it
        afterwards that another span should be current for, so there is no token to keep
        and reset (two objects and a bound method fewer per live agent than
        :meth:`current`).
        """
        otel_context.attach(self.otel_context())

    def set(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (ignored once ended or when not recording)."""
        if self._span is not None and not self._ended:
            self._span.set_attribute(key, value)

    def set_decision(self, effect: str, rule_id: str) -> None:
        """Record the policy decision that let this step run (``tenure.decision``/``rule.id``)."""
        if self._span is not None and not self._ended:
            self._span.set_attributes({ATTR_DECISION: effect, ATTR_RULE_ID: rule_id})

    def set_usage(self, input_tokens: int, output_tokens: int, response_model: str) -> None:
        """Record a model call's usage (``gen_ai.usage.*``, ``gen_ai.response.model``)."""
        if self._span is not None and not self._ended:
            self._span.set_attributes(
                {
                    ATTR_USAGE_INPUT_TOKENS: input_tokens,
                    ATTR_USAGE_OUTPUT_TOKENS: output_tokens,
                    ATTR_RESPONSE_MODEL: response_model,
                }
            )

    def event(self, name: str, attrs: Mapping[str, AttributeValue] | None = None) -> None:
        """Add a span event, e.g. :data:`EVENT_LEASE_REVOKED` (ignored once ended)."""
        if self._span is not None and not self._ended:
            self._span.add_event(name, attrs or {})

    def end(self, error: BaseException | None = None) -> None:
        """End the span; with ``error``, status ERROR (description = the reason) and
        ``error.type`` = the fully qualified exception class name. Idempotent."""
        if self._ended:
            return
        self._ended = True
        span = self._span
        if span is None:
            return
        if error is not None:
            span.set_attribute(ATTR_ERROR_TYPE, error_type(error))
            check = getattr(error, "check", None)
            if isinstance(check, str):
                span.set_attribute(ATTR_CHECK, check)
            span.set_status(Status(StatusCode.ERROR, _error_description(error)))
        try:
            span.end()
        except Exception:  # a user's span processor raised in on_end
            lineage_fault("span end")

    def __repr__(self) -> str:
        return f"SpanHandle(trace_id={self.trace_id!r}, span_id={self.span_id!r})"


class _Current:
    """Attaches an OpenTelemetry context for the length of a ``with`` block."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._ctx)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


#: A handle that records nothing and has empty ids; a parent of NOOP_SPAN means "no parent".
NOOP_SPAN: Final = SpanHandle(None, None)
NOOP_SPAN._ended = True

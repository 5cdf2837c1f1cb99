"""Lineage: OpenTelemetry spans for runs, agents and tools (GenAI semantic conventions).

One trace per run: ``invoke_workflow {workflow}`` at the root, ``invoke_agent {name}`` for
every governed agent task and ``execute_tool {name}`` for every tool call, each an INTERNAL
span whose parent is the span of the task that started it, and ``chat {model}`` (CLIENT) for
every governed model call. Governance data rides on the
spans as ``tenure.*`` attributes and events; the evidence ledger, not the trace, is the
record of truth, and every ledger record carries the trace and span id of its span.

Invariants:

- **Parents are explicit.** ``start_agent`` / ``start_tool`` take the parent
  :class:`SpanHandle`; the ambient OpenTelemetry context is consulted only by
  :meth:`Lineage.start_run`, so that a run started inside an existing span joins its trace.
  Governed tasks are driven by a custom coroutine wrapper and by fan-out task groups, where
  the ambient context is not a reliable parent.
- **No exporter configured means no network traffic and no threads.** Without a tracer
  provider, an ``otlp_endpoint`` or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` variable,
  :class:`Lineage` builds no SDK pipeline at all: spans are light id holders (W3C ids, the
  parent's trace id and flags), so the ledger still gets ids and agents still get a carrier.
- **Export is best effort and never blocks a run.** Ended spans go to a
  ``BatchSpanProcessor`` whose queue is bounded (spans are dropped when it is full) and whose
  exporter runs on its own thread with a request timeout; :meth:`Lineage.shutdown` waits at
  most ``timeout_s`` however the exporter behaves.
- **Ending is idempotent**: a second :meth:`SpanHandle.end` is ignored.
- **A faulty span processor never fails a run**: the SDK lets an exception from a
  processor's ``on_start`` / ``on_end`` escape ``start_span`` / ``end``; it is logged (once)
  and the span degrades to a light id holder, so the ledger still gets ids.
- Attribute and event names are declared once, in :mod:`._names`.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from .._version import __version__
from ._names import (
    ATTR_AGENT_ID,
    ATTR_AGENT_NAME,
    ATTR_ATTESTATION_DIGEST,
    ATTR_CHECK,
    ATTR_DECISION,
    ATTR_ERROR_TYPE,
    ATTR_FRAMEWORK,
    ATTR_LEASE_ID,
    ATTR_OPERATION_NAME,
    ATTR_POLICY_DIGEST,
    ATTR_PRINCIPAL,
    ATTR_PROVIDER_NAME,
    ATTR_REQUEST_MODEL,
    ATTR_RESPONSE_MODEL,
    ATTR_RULE_ID,
    ATTR_RUN_ID,
    ATTR_STEP_ID,
    ATTR_TOOL_CALL_ID,
    ATTR_TOOL_NAME,
    ATTR_TOOL_TYPE,
    ATTR_USAGE_INPUT_TOKENS,
    ATTR_USAGE_OUTPUT_TOKENS,
    ATTR_WORKFLOW_NAME,
    INSTRUMENTATION_NAME,
    OP_CHAT,
    OP_EXECUTE_TOOL,
    OP_INVOKE_AGENT,
    OP_INVOKE_WORKFLOW,
    PROVIDER_NAME,
    SCHEMA_URL,
    TOOL_TYPE_FUNCTION,
    error_type,
)

__all__ = [
    "NOOP_SPAN",
    "Lineage",
    "SpanHandle",
]

# Span ids come from a private generator: drawing from the global ``random`` state would
# disturb (and be disturbed by) user code that seeds it for reproducibility.
_ids = random.Random()

_log = logging.getLogger("tenure.lineage")

# --- names: declared in ._names ----------------------------------------------------------

# --- export limits (safe defaults, units in the name) ----------------------------------------

DEFAULT_SERVICE_NAME: Final = "tenure"
EXPORT_QUEUE_MAX_SPANS: Final = 2048
EXPORT_BATCH_MAX_SPANS: Final = 512
EXPORT_SCHEDULE_DELAY_MS: Final = 500
EXPORT_REQUEST_TIMEOUT_S: Final = 5.0
# Time given to an interrupted exporter and processor to stop once the flush used the budget.
SHUTDOWN_GRACE_S: Final = 0.1
STATUS_DESCRIPTION_MAX_CHARS: Final = 512
OTLP_TRACES_PATH: Final = "/v1/traces"

_ENV_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
_ENV_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_ENV_TIMEOUTS: Final = ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
_ENV_PROTOCOLS: Final = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
_ENV_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
_ENV_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_EMPTY_CONTEXT: Final = Context()
_NEW_ROOT_FLAGS: Final = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_EMPTY_TRACESTATE: Final = TraceState()


_warned: list[bool] = []


class _InterruptibleExporter(SpanExporter):
    """Wraps the exporter of a provider we own so that shutdown can cut a retry short.

    The SDK's batch processor joins its worker (up to 30 s) *before* it shuts the exporter
    down, and the OTLP exporter keeps retrying an unreachable collector until its deadline;
    a bounded shutdown would otherwise leave that thread retrying after the runtime is gone.
    Shutting the wrapped exporter down first wakes the retry loop; a second shutdown, from
    the processor, is a no-op instead of the SDK's "already shutdown" warning.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        return self._inner.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._inner.shutdown()


def _lineage_fault(what: str) -> None:
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

    def __init__(self, span: Span | None, span_context: SpanContext | None) -> None:
        self._span = span
        self._span_context = span_context
        self._ctx: Context | None = None
        self._ended = False
        if span_context is None:
            self.trace_id = ""
            self.span_id = ""
        else:
            self.trace_id = f"{span_context.trace_id:032x}"
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
            _lineage_fault("span end")

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


def _traces_endpoint(endpoint: str) -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/traces`` (a full URL is kept)."""
    base = endpoint.strip()
    if not base.startswith(("http://", "https://")):
        raise ValueError(
            f"otlp_endpoint must be an http:// or https:// URL, got {endpoint!r} "
            "(expected e.g. 'http://localhost:4318')"
        )
    base = base.rstrip("/")
    if base.endswith(OTLP_TRACES_PATH):
        return base
    return base + OTLP_TRACES_PATH


class Lineage:
    """Creates the run / agent / tool spans of the runtime.

    Args:
        tracer_provider: the user's own provider; used as is and never shut down by us
            (:meth:`shutdown` only flushes it, bounded).
        otlp_endpoint: base OTLP/HTTP URL (``http://localhost:4318``) or the full traces URL;
            overrides the ``OTEL_EXPORTER_OTLP_*`` variables.
        service_name: ``service.name`` of the resource; else ``$OTEL_SERVICE_NAME``, else
            ``"tenure"``.
        exporter: a span exporter to use instead of OTLP (tests, console export); like an
            endpoint, it turns recording on.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        otlp_endpoint: str | None = None,
        service_name: str | None = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        self._owned: SDKTracerProvider | None = None
        self._provider: TracerProvider | None = tracer_provider
        self._tracer: Tracer | None = None
        self._closed = False
        self._interruptible: _InterruptibleExporter | None = None
        self.exporter: SpanExporter | None = None
        if tracer_provider is None and otlp_endpoint is None and exporter is None:
            # A provider the application configured globally is the user's own.
            global_provider = trace.get_tracer_provider()
            if not isinstance(global_provider, trace.ProxyTracerProvider):
                self._provider = tracer_provider = global_provider
        if tracer_provider is None:
            exporter = exporter if exporter is not None else self._otlp_from_config(otlp_endpoint)
            if exporter is not None:
                name = service_name or os.environ.get(_ENV_SERVICE_NAME) or DEFAULT_SERVICE_NAME
                provider = SDKTracerProvider(
                    resource=Resource.create({"service.name": name}), shutdown_on_exit=False
                )
                self._interruptible = _InterruptibleExporter(exporter)
                provider.add_span_processor(
                    BatchSpanProcessor(
                        self._interruptible,
                        max_queue_size=EXPORT_QUEUE_MAX_SPANS,
                        schedule_delay_millis=EXPORT_SCHEDULE_DELAY_MS,
                        max_export_batch_size=EXPORT_BATCH_MAX_SPANS,
                    )
                )
                self.exporter = exporter
                self._owned = provider
                self._provider = provider
                atexit.register(self.shutdown)
        elif otlp_endpoint is not None or exporter is not None:
            raise ValueError(
                "pass either tracer_provider (configure its exporters yourself) or "
                "otlp_endpoint/exporter, not both"
            )
        if self._provider is not None:
            self._tracer = self._provider.get_tracer(
                INSTRUMENTATION_NAME, __version__, schema_url=SCHEMA_URL
            )

    @staticmethod
    def _otlp_from_config(otlp_endpoint: str | None) -> SpanExporter | None:
        if otlp_endpoint is None:
            if os.environ.get(_ENV_TRACES_EXPORTER, "").strip().lower() == "none":
                return None
            if not (os.environ.get(_ENV_TRACES_ENDPOINT) or os.environ.get(_ENV_ENDPOINT)):
                return None
        for var in _ENV_PROTOCOLS:
            if os.environ.get(var, "http/protobuf").strip().lower() == "grpc":
                _log.warning(
                    "%s=grpc is not supported; exporting with OTLP/HTTP (protobuf), "
                    "point the endpoint at port 4318",
                    var,
                )
        # Imported lazily: requests and protobuf are only loaded when exporting.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        from_env = any(os.environ.get(v) for v in _ENV_TIMEOUTS)
        timeout = None if from_env else EXPORT_REQUEST_TIMEOUT_S
        endpoint = _traces_endpoint(otlp_endpoint) if otlp_endpoint is not None else None
        return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The provider spans are recorded with; ``None`` when nothing is recorded."""
        return self._provider

    @property
    def recording(self) -> bool:
        """Whether spans are recorded (a provider was given or an exporter configured)."""
        return self._tracer is not None

    # --- span creation --------------------------------------------------------------------

    def _light(self, parent: SpanContext | None) -> SpanHandle:
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            flags = parent.trace_flags
            state = parent.trace_state
        else:
            trace_id = _ids.getrandbits(128) or 1
            flags = _NEW_ROOT_FLAGS
            state = _EMPTY_TRACESTATE
        sc = SpanContext(trace_id, _ids.getrandbits(64) or 1, False, flags, state)
        return SpanHandle(None, sc)

    def _start(
        self,
        name: str,
        parent: SpanHandle | None,
        attributes: dict[str, AttributeValue],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> SpanHandle:
        tracer = self._tracer
        if tracer is None:
            if parent is None:
                return self._light(trace.get_current_span().get_span_context())
            return self._light(parent._span_context)
        context = None if parent is None else parent.otel_context()
        try:
            span = tracer.start_span(name, context, kind, attributes)
        except Exception:  # a user's span processor raised in on_start
            _lineage_fault("span start")
            return self._light(parent._span_context if parent is not None else None)
        sc = span.get_span_context()
        parent_sc = (
            parent._span_context
            if parent is not None
            else trace.get_current_span().get_span_context()
        )
        if not sc.is_valid or (
            parent_sc is not None and sc.span_id == parent_sc.span_id and not span.is_recording()
        ):
            # A disabled SDK (OTEL_SDK_DISABLED) or a no-op provider hands back an invalid
            # context or the parent's own: the ledger still needs ids of its own, so the
            # span becomes a light id holder under the same parent.
            return self._light(parent_sc if parent_sc is not None and parent_sc.is_valid else None)
        return SpanHandle(span, sc)

    def start_run(
        self,
        run_id: str,
        workflow: str,
        principal: str,
        policy_digest: str,
        attestation_digest: str,
    ) -> SpanHandle:
        """Start the root span ``invoke_workflow {workflow}``; its parent is the current
        OpenTelemetry span, if any (the run joins that trace)."""
        return self._start(
            f"{OP_INVOKE_WORKFLOW} {workflow}",
            None,
            {
                ATTR_OPERATION_NAME: OP_INVOKE_WORKFLOW,
                ATTR_WORKFLOW_NAME: workflow,
                ATTR_RUN_ID: run_id,
                ATTR_PRINCIPAL: principal,
                ATTR_POLICY_DIGEST: policy_digest,
                ATTR_ATTESTATION_DIGEST: attestation_digest,
            },
        )

    def start_agent(
        self,
        parent: SpanHandle,
        name: str,
        *,
        agent_id: str | None = None,
        run_id: str,
        step_id: str,
        lease_id: str,
        principal: str,
    ) -> SpanHandle:
        """Start ``invoke_agent {name}`` under ``parent`` (the run or the delegating agent).

        ``agent_id`` is the agent's identity, the same in every run (the runtime passes its
        qualified Python name; default: ``name``); the step number within the run goes under
        ``tenure.step.id``.
        """
        return self._start(
            f"{OP_INVOKE_AGENT} {name}",
            parent,
            {
                ATTR_OPERATION_NAME: OP_INVOKE_AGENT,
                ATTR_PROVIDER_NAME: PROVIDER_NAME,
                ATTR_AGENT_NAME: name,
                ATTR_AGENT_ID: agent_id if agent_id is not None else name,
                ATTR_STEP_ID: step_id,
                ATTR_RUN_ID: run_id,
                ATTR_LEASE_ID: lease_id,
                ATTR_PRINCIPAL: principal,
            },
        )

    def start_tool(
        self,
        parent: SpanHandle,
        name: str,
        *,
        run_id: str,
        call_id: str,
        lease_id: str,
        principal: str,
        tool_type: str = TOOL_TYPE_FUNCTION,
        framework: str = "",
    ) -> SpanHandle:
        """Start ``execute_tool {name}`` under ``parent`` (the calling agent's span, or the
        span of the framework that made the call)."""
        attributes: dict[str, AttributeValue] = {
            ATTR_OPERATION_NAME: OP_EXECUTE_TOOL,
            ATTR_TOOL_NAME: name,
            ATTR_TOOL_CALL_ID: call_id,
            ATTR_TOOL_TYPE: tool_type,
            ATTR_RUN_ID: run_id,
            ATTR_LEASE_ID: lease_id,
            ATTR_PRINCIPAL: principal,
        }
        if framework:
            attributes[ATTR_FRAMEWORK] = framework
        return self._start(f"{OP_EXECUTE_TOOL} {name}", parent, attributes)

    def start_model(
        self,
        parent: SpanHandle,
        model: str,
        *,
        provider: str,
        run_id: str,
        step_id: str,
        lease_id: str,
        principal: str,
    ) -> SpanHandle:
        """Start the inference span ``chat {model}`` (CLIENT) under ``parent``."""
        attributes: dict[str, AttributeValue] = {
            ATTR_OPERATION_NAME: OP_CHAT,
            ATTR_REQUEST_MODEL: model,
            ATTR_RUN_ID: run_id,
            ATTR_STEP_ID: step_id,
            ATTR_LEASE_ID: lease_id,
            ATTR_PRINCIPAL: principal,
        }
        if provider:
            attributes[ATTR_PROVIDER_NAME] = provider
        return self._start(f"{OP_CHAT} {model}", parent, attributes, SpanKind.CLIENT)

    def carrier(self, handle: SpanHandle) -> dict[str, str]:
        """W3C ``traceparent`` (and ``tracestate``) headers for ``handle``'s span, to pass
        on in an agent's own outgoing calls. Empty for :data:`NOOP_SPAN`."""
        out: dict[str, str] = {}
        if handle._span_context is not None:
            _PROPAGATOR.inject(out, handle.otel_context())
        return out

    # --- shutdown -------------------------------------------------------------------------

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Flush and stop the export pipeline, waiting at most about ``timeout_s``.

        A provider we built is shut down; a user's provider is only flushed. A hanging
        exporter is abandoned on its daemon thread. Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        if self._owned is not None and self._interruptible is not None:
            atexit.unregister(self.shutdown)
            owned = self._owned
            deadline = time.monotonic() + timeout_s
            millis = max(0, int(timeout_s * 1000))
            self._run_bounded(lambda: owned.force_flush(millis), timeout_s)
            # Whatever the flush left (a collector that is down or hanging) is dropped now,
            # rather than retried on a thread that outlives the runtime.
            grace_s = SHUTDOWN_GRACE_S
            self._run_bounded(
                self._interruptible.shutdown, max(grace_s, deadline - time.monotonic())
            )
            self._run_bounded(owned.shutdown, max(grace_s, deadline - time.monotonic()))
        elif self._provider is not None:
            flush = getattr(self._provider, "force_flush", None)
            if callable(flush):
                millis = max(0, int(timeout_s * 1000))
                self._run_bounded(lambda: flush(millis), timeout_s)

    @staticmethod
    def _run_bounded(fn: Callable[[], object], timeout_s: float) -> None:
        def target() -> None:
            try:
                fn()
            except Exception:  # best effort: export must never crash a run
                _log.exception("tracing shutdown failed")

        worker = threading.Thread(target=target, name="tenure-lineage-shutdown", daemon=True)
        worker.start()
        worker.join(max(0.0, timeout_s))
        if worker.is_alive():
            _log.warning("tracing exporter did not finish within %.1f s; spans dropped", timeout_s)

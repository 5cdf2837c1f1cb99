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
import random
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    TracerProvider,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from .._version import __version__
from ._export import OwnedPipeline, otlp_from_config, run_bounded
from ._handle import NOOP_SPAN, SpanHandle, lineage_fault
from ._names import (
    ATTR_AGENT_ID,
    ATTR_AGENT_NAME,
    ATTR_ATTESTATION_DIGEST,
    ATTR_FRAMEWORK,
    ATTR_LEASE_ID,
    ATTR_OPERATION_NAME,
    ATTR_POLICY_DIGEST,
    ATTR_PRINCIPAL,
    ATTR_PROVIDER_NAME,
    ATTR_REQUEST_MODEL,
    ATTR_RUN_ID,
    ATTR_STEP_ID,
    ATTR_TOOL_CALL_ID,
    ATTR_TOOL_NAME,
    ATTR_TOOL_TYPE,
    ATTR_WORKFLOW_NAME,
    INSTRUMENTATION_NAME,
    OP_CHAT,
    OP_EXECUTE_TOOL,
    OP_INVOKE_AGENT,
    OP_INVOKE_WORKFLOW,
    PROVIDER_NAME,
    SCHEMA_URL,
    TOOL_TYPE_FUNCTION,
)

# SpanHandle and NOOP_SPAN live in ._handle; the engine takes them from here with Lineage.
__all__ = ["NOOP_SPAN", "Lineage", "SpanHandle"]

# Span ids come from a private generator: drawing from the global ``random`` state would
# disturb (and be disturbed by) user code that seeds it for reproducibility.
_ids = random.Random()

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NEW_ROOT_FLAGS: Final = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_EMPTY_TRACESTATE: Final = TraceState()


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
        self._owned: OwnedPipeline | None = None
        self._provider: TracerProvider | None = tracer_provider
        self._tracer: Tracer | None = None
        self._closed = False
        self.exporter: SpanExporter | None = None
        if tracer_provider is None and otlp_endpoint is None and exporter is None:
            # A provider the application configured globally is the user's own.
            global_provider = trace.get_tracer_provider()
            if not isinstance(global_provider, trace.ProxyTracerProvider):
                self._provider = tracer_provider = global_provider
        if tracer_provider is None:
            exporter = exporter if exporter is not None else otlp_from_config(otlp_endpoint)
            if exporter is not None:
                self._owned = OwnedPipeline(exporter, service_name)
                self.exporter = exporter
                self._provider = self._owned.provider
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

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The provider spans are recorded with; ``None`` when nothing is recorded."""
        return self._provider

    @property
    def recording(self) -> bool:
        """Whether spans are recorded (a provider was given or an exporter configured)."""
        return self._tracer is not None

    # --- span creation --------------------------------------------------------------------

    def _light(self, parent: SpanContext | None, parent_trace: str = "") -> SpanHandle:
        """A light id holder under ``parent`` (``parent_trace``: its trace id in hex, if
        known), or the root of a new trace."""
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            flags = parent.trace_flags
            state = parent.trace_state
        else:
            trace_id = _ids.getrandbits(128) or 1
            flags = _NEW_ROOT_FLAGS
            state = _EMPTY_TRACESTATE
            parent_trace = ""
        sc = SpanContext(trace_id, _ids.getrandbits(64) or 1, False, flags, state)
        return SpanHandle(None, sc, parent_trace)

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
            return self._light(parent._span_context, parent.trace_id)
        context = None if parent is None else parent.otel_context()
        try:
            span = tracer.start_span(name, context, kind, attributes)
        except Exception:  # a user's span processor raised in on_start
            lineage_fault("span start")
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
        if self._tracer is None:  # nothing recorded: no name or attributes to build
            return self._light(parent._span_context, parent.trace_id)
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
        if self._tracer is None:  # nothing recorded: no name or attributes to build
            return self._light(parent._span_context, parent.trace_id)
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
        if self._owned is not None:
            atexit.unregister(self.shutdown)
            self._owned.shutdown(timeout_s)
        elif self._provider is not None:
            flush = getattr(self._provider, "force_flush", None)
            if callable(flush):
                millis = max(0, int(timeout_s * 1000))
                run_bounded(lambda: flush(millis), timeout_s)

"""Spans for publish, request, handle and reply, linked through the ``traceparent`` header.

Off unless ``FABRIC_TRACING`` is ``console`` or ``otlp``; when off, the agent holds None and
the hot path pays one ``is None`` test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._msg import Msg

__all__ = ["AgentTracer"]


class _ActiveSpan:
    __slots__ = ("_span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self._span = span
        self._token = token

    def end(self) -> None:
        from opentelemetry import context

        context.detach(self._token)
        self._span.end()


class AgentTracer:
    """OpenTelemetry glue for one agent."""

    def __init__(self, tracer: Any, agent: str) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._agent = agent
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_env(cls, agent: str, mode: str | None = None) -> AgentTracer | None:
        """A tracer when tracing is on, else None.

        Raises:
            ConfigError: unknown mode, or OpenTelemetry not installed.
        """
        import os

        from fabric.telemetry import make_tracer, tracing_mode

        mode = tracing_mode(mode)
        if mode == "off":
            return None
        return cls(make_tracer(agent, mode, os.environ.get("FABRIC_OTLP_ENDPOINT")), agent)

    def current_traceparent(self) -> str:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get("traceparent", "")

    def _activate(self, span: Any) -> _ActiveSpan:
        from opentelemetry import context, trace

        token = context.attach(trace.set_span_in_context(span))
        return _ActiveSpan(span, token)

    def start(self, operation: str, subject: str) -> _ActiveSpan:
        """A span for an outgoing operation, child of whatever span is current."""
        from opentelemetry.trace import SpanKind

        span = self._tracer.start_span(
            f"{operation} {subject}",
            kind=SpanKind.PRODUCER if operation == "publish" else SpanKind.CLIENT,
            attributes={"messaging.destination.name": subject, "fabric.agent": self._agent},
        )
        return self._activate(span)

    def link_current(self, traceparent: str) -> None:
        """Link the current span to another (the node's directory span of a direct path)."""
        if not traceparent:
            return
        from opentelemetry import trace

        context = trace.get_current_span(self._propagator.extract({"traceparent": traceparent}))
        current = trace.get_current_span()
        if current.is_recording():
            current.add_link(context.get_span_context(), {"fabric.link": "directory"})

    def start_handle(self, msg: Msg) -> _ActiveSpan:
        """A span for handling ``msg``, child of the sender's span."""
        parent = (
            self._propagator.extract({"traceparent": msg.traceparent}) if msg.traceparent else None
        )
        from opentelemetry.trace import SpanKind

        span = self._tracer.start_span(
            f"handle {msg.subject}",
            context=parent,
            kind=SpanKind.SERVER if msg.reply else SpanKind.CONSUMER,
            attributes={"messaging.destination.name": msg.subject, "fabric.agent": self._agent},
        )
        return self._activate(span)

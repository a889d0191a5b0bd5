"""OpenTelemetry set-up, shared by nodes and agents. Imported only when tracing is on, so
an agent that does not trace never loads OpenTelemetry."""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import ConfigError

__all__ = ["NodeTracer", "make_tracer", "tracing_mode"]

_PROVIDERS: dict[str, Any] = {}


class _Stdout:
    """Whatever ``sys.stdout`` is when a span is written (providers outlive redirections)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def tracing_mode(explicit: str | None = None) -> str:
    """``off``, ``console`` or ``otlp``: the argument, else ``FABRIC_TRACING``, else off."""
    mode = (explicit or os.environ.get("FABRIC_TRACING") or "off").lower()
    if mode not in ("off", "console", "otlp"):
        raise ConfigError(f"FABRIC_TRACING must be off, console or otlp, not {mode!r}")
    return mode


def make_tracer(service: str, mode: str, endpoint: str | None = None) -> Any:
    """A tracer exporting to the console or to an OTLP/HTTP collector.

    Raises:
        ConfigError: when the ``otel`` extra is not installed.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise ConfigError("tracing needs OpenTelemetry: pip install 'agent-fabric[otel]'") from None
    key = f"{service}/{mode}/{endpoint}"
    provider = _PROVIDERS.get(key)
    if provider is None:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        if mode == "console":
            console = ConsoleSpanExporter(out=_Stdout())  # type: ignore[arg-type]
            provider.add_span_processor(SimpleSpanProcessor(console))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _PROVIDERS[key] = provider
    return provider.get_tracer("agent-fabric")


class NodeTracer:
    """A span per hop through a node, child of the publisher's span (from ``traceparent``).

    Deliveries keep the publisher's ``traceparent``, so a handler's span is a sibling of the
    hop under the publisher's span rather than one more level down.
    """

    def __init__(self, node: str, mode: str, endpoint: str | None = None) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = make_tracer(f"fabric-node-{node}", mode, endpoint)
        self._propagator = TraceContextTextMapPropagator()
        self._node = node

    def directory(self, subject: str, traceparent: str, direct: bool, targets: int) -> str:
        """Record the node answering ``$node.resolve`` for a same-host direct request.

        The span is a child of the asking request; the agent caches the answer and links
        every later direct request for ``subject`` to this span (the node is in each of
        those traces without a hop per message). Returns this span's ``traceparent``.
        """
        from opentelemetry import trace

        parent = self._propagator.extract({"traceparent": traceparent}) if traceparent else None
        span = self._tracer.start_span(
            f"directory {subject}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "messaging.destination.name": subject,
                "fabric.node": self._node,
                "fabric.direct": direct,
                "fabric.targets": targets,
            },
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier.get("traceparent", "")

    def hop(self, subject: str, traceparent: str, reached: int) -> None:
        """Record one routed message (a zero-duration span: routing does not wait)."""
        parent = self._propagator.extract({"traceparent": traceparent}) if traceparent else None
        span = self._tracer.start_span(
            f"hop {subject}",
            context=parent,
            attributes={
                "messaging.destination.name": subject,
                "fabric.node": self._node,
                "fabric.reached": reached,
            },
        )
        span.end()

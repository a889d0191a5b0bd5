"""OpenTelemetry set-up, shared by nodes and agents. Imported only when tracing is on, so
an agent that does not trace never loads OpenTelemetry."""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError

__all__ = ["make_tracer", "tracing_mode"]

_PROVIDERS: dict[str, Any] = {}


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
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _PROVIDERS[key] = provider
    return provider.get_tracer("agent-fabric")

"""An in-memory OTLP/HTTP trace receiver for process tests: node and agent processes export
their spans to it over loopback (``tracing = "otlp"``), and the test reads them from memory.

It decodes the real OTLP protobuf (``ExportTraceServiceRequest``) that the SDK's
``OTLPSpanExporter`` posts, so nothing of the export path is faked.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[str]


@dataclass
class OtlpSink:
    """``await start()``; ``url`` is the traces endpoint, ``metrics_url`` the metrics one;
    ``spans`` and ``metrics`` (name -> last value of each data point, by attributes) grow as
    exports arrive."""

    spans: list[Span] = field(default_factory=list)
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_for(self, predicate: Any, timeout: float = 30.0, *, on: str = "spans") -> None:
        """Until ``predicate(spans)`` (or ``predicate(metrics)`` with ``on="metrics"``) holds,
        re-checked as each export arrives."""

        async def check() -> None:
            while not predicate(getattr(self, on)):
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(check(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (
                        line.partition(":") for line in head.decode().split("\r\n")[1:] if line
                    )
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if b" /v1/metrics " in head.split(b"\r\n", 1)[0]:
                    self._ingest_metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self._ingest(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _ingest(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource.resource.attributes
                 if a.key == "service.name"),
                "",
            )
            for scope in resource.scope_spans:
                for s in scope.spans:
                    attributes: dict[str, Any] = {}
                    for a in s.attributes:
                        v = a.value
                        attributes[a.key] = (
                            v.string_value if v.HasField("string_value")
                            else v.int_value if v.HasField("int_value")
                            else v.bool_value
                        )
                    self.spans.append(Span(
                        service=service,
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        kind=s.kind,
                        attributes=attributes,
                        links=[link.span_id.hex() for link in s.links],
                    ))
        self._arrived.set()

    def _ingest_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points
                    store = self.metrics.setdefault(metric.name, {})
                    for p in points:
                        labels = tuple(sorted((a.key, a.value.string_value) for a in p.attributes))
                        if kind == "histogram":
                            store[labels] = float(p.count)
                        else:
                            store[labels] = float(p.as_int if p.HasField("as_int") else p.as_double)
        self._arrived.set()

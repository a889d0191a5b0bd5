"""The direct same-host path in a trace: the node records its directory answer as a span of
the first request, and every later direct request links to that span."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from otlp_sink import OtlpSink
from procs import start_node

from sdk import connect

pytestmark = pytest.mark.timeout(60)

pytest.importorskip("opentelemetry.sdk")


@pytest.fixture
async def sink() -> AsyncIterator[OtlpSink]:
    receiver = OtlpSink()
    await receiver.start()
    yield receiver
    await receiver.aclose()


async def test_direct_requests_link_to_the_nodes_directory_span(
    tmp_path, fabric_env, sink, monkeypatch
):
    env = dict(fabric_env, OTEL_BSP_SCHEDULE_DELAY="100", FABRIC_OTLP_ENDPOINT=sink.url)
    node = await start_node(tmp_path / "n.sock", env, extra=["--tracing", "otlp"])
    try:
        monkeypatch.setenv("FABRIC_TRACING", "otlp")
        monkeypatch.setenv("FABRIC_OTLP_ENDPOINT", sink.url)
        async with connect("direct-svc", node.url) as svc, connect(
            "direct-caller", node.url
        ) as caller:

            async def echo(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await svc.serve("svc.direct.traced", echo)
            await svc.flush()
            for _ in range(3):
                await caller.request("svc.direct.traced", b"x", timeout=10)
            assert caller.stats.published >= 3
        from fabric.telemetry import _PROVIDERS

        for provider in _PROVIDERS.values():
            provider.force_flush()

        def ready(spans) -> bool:  # type: ignore[no-untyped-def]
            names = [s.name for s in spans]
            return names.count("request svc.direct.traced") == 3 and (
                "directory svc.direct.traced" in names
            )

        await sink.wait_for(ready)
        requests = [s for s in sink.spans if s.name == "request svc.direct.traced"]
        (directory,) = [s for s in sink.spans if s.name == "directory svc.direct.traced"]
        assert directory.service == "fabric-node-n1"
        assert directory.attributes["fabric.direct"] is True
        # the first request asked the directory: the node's span is its child
        first = next(r for r in requests if r.span_id == directory.parent_id)
        assert first.trace_id == directory.trace_id
        # every direct request links to the directory span (cached answers included)
        for r in requests:
            assert directory.span_id in r.links, r
        # no hop span: the node did not carry these requests
        assert not [s for s in sink.spans if s.name == "hop svc.direct.traced"]
    finally:
        await node.stop()

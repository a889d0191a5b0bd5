"""One trace for a gather that starts at an edge agent, crosses the cloud nodes to every
responder and comes back: every node and agent process exports its spans by OTLP to an
in-memory receiver in the test (tests/otlp_sink.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from otlp_sink import OtlpSink, Span
from procs import start_agent

from sdk import connect

from .conftest import MeshNodes

pytestmark = pytest.mark.timeout(240)

pytest.importorskip("opentelemetry.sdk")


@pytest.fixture
async def sink() -> AsyncIterator[OtlpSink]:
    receiver = OtlpSink()
    await receiver.start()
    yield receiver
    await receiver.aclose()


@pytest.fixture
def fabric_env(fabric_env: dict[str, str]) -> dict[str, str]:
    # Export batches every 100 ms instead of 5 s, so spans arrive while the processes run.
    return dict(fabric_env, OTEL_BSP_SCHEDULE_DELAY="100")


@pytest.fixture
def mesh_extra(sink: OtlpSink) -> str:
    return f'tracing = "otlp"\notlp_endpoint = "{sink.url}"\n'


def _in_trace(spans: list[Span], trace_id: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id]


async def test_one_trace_for_a_gather_from_the_edge_across_the_mesh(
    mesh5: MeshNodes, sink: OtlpSink, fabric_env: dict[str, str], monkeypatch: Any
) -> None:
    m = mesh5
    agent_env = dict(fabric_env, FABRIC_TRACING="otlp", FABRIC_OTLP_ENDPOINT=sink.url)
    responders = {"c1": "r-c1", "c2": "r-c2", "e2": "r-e2"}  # cloud, cloud, the other edge
    procs = await asyncio.gather(
        *(start_agent("reviewers", m.url(at), agent_env, "1", prefix)
          for at, prefix in responders.items())
    )
    try:
        # generous: five nodes and three agents start slowly on a busy 2-core machine
        await m.wait_interest("e1", "review.essay", timeout=60)  # from its hub c1
        await m.wait_interest("c1", "review.essay", peers=2, timeout=60)  # c2's, c3's (e2's)
        monkeypatch.setenv("FABRIC_TRACING", "otlp")
        monkeypatch.setenv("FABRIC_OTLP_ENDPOINT", sink.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        async with connect("editor", m.url("e1")) as editor:
            result = await editor.gather("review.essay", b"draft", deadline=20)
        assert sorted(r.text() for r in result) == ["r-c1-0", "r-c2-0", "r-e2-0"]

        def gather_span(spans: list[Span]) -> Span | None:
            return next((s for s in spans if s.name == "gather review.essay"), None)

        # flush the test process's own spans (its provider is process-global)
        from fabric.telemetry import _PROVIDERS

        for provider in _PROVIDERS.values():
            provider.force_flush()
        await sink.wait_for(lambda spans: gather_span(spans) is not None, 60)
        root = gather_span(sink.spans)
        assert root is not None

        def complete(spans: list[Span]) -> bool:
            mine = _in_trace(spans, root.trace_id)
            handles = {s.service for s in mine if s.name == "handle review.essay"}
            hops = {s.attributes.get("fabric.node") for s in mine
                    if s.name == "hop review.essay"}
            back = {s.attributes.get("fabric.node") for s in mine
                    if s.name.startswith("hop _INBOX.")}
            return (handles == {"r-c1-0", "r-c2-0", "r-e2-0"}
                    and {"e1", "c1", "c2", "c3", "e2"} <= hops
                    and {"e1", "c1"} <= back)

        await sink.wait_for(complete, timeout=60)
        trace = _in_trace(sink.spans, root.trace_id)
        ids = {s.span_id for s in trace}
        # one tree: every span but the root hangs off a span of this trace
        for s in trace:
            assert s is root or s.parent_id in ids, (s.service, s.name)
        # the way out: hops at every node between the editor and each responder are
        # children of the gather; each responder's handle span is too (it carries the
        # gather's traceparent), and its reply's hops are children of the handle span.
        handles = {s.span_id: s for s in trace if s.name == "handle review.essay"}
        for s in trace:
            if s.name == "hop review.essay" or s.name == "handle review.essay":
                assert s.parent_id == root.span_id, s
            if s.name.startswith("hop _INBOX."):
                assert s.parent_id in handles, s
        services = {s.service for s in trace}
        assert {"fabric-node-e1", "fabric-node-c1", "fabric-node-c2", "fabric-node-c3",
                "fabric-node-e2", "editor"} <= services
    finally:
        await asyncio.gather(*(p.stop() for p in procs))

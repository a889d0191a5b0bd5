"""Agent-side metrics (FABRIC_AGENT_METRICS): latency histograms and errors per subject
prefix, recorded through OpenTelemetry against a real node."""

from __future__ import annotations

import pytest

from fabric.errors import NoResponders
from sdk import connect
from sdk._metrics import AgentMetrics, subject_label

pytestmark = pytest.mark.timeout(60)

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics")


def _points(reader) -> dict:  # type: ignore[no-untyped-def,type-arg]
    out = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    key = (metric.name, tuple(sorted(p.attributes.items())))
                    out[key] = getattr(p, "count", None) or getattr(p, "value", None)
    return out


async def test_latency_and_errors_per_subject_prefix(node, agent_procs):
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = otel_sdk.MeterProvider(metric_readers=[reader])
    await agent_procs("streamer", node.url)
    await agent_procs("reviewers", node.url, "2", "rv")
    async with connect("metered", node.url) as agent, connect("svc", node.url) as svc:

        async def echo(msg):  # type: ignore[no-untyped-def]
            return bytes(msg.data)

        await svc.serve("tasks.echo.*", echo)
        await svc.flush()
        AgentMetrics(provider.get_meter("test")).instrument(agent)
        for i in range(5):
            await agent.request(f"tasks.echo.{i}", b"x", timeout=10)
        with pytest.raises(NoResponders):
            await agent.request("tasks.nobody", b"", timeout=10)
        assert len(await agent.gather("review.essay", b"d", deadline=10)) == 2
        chunks = [c.text() async for c in agent.stream("llm.generate", b"3", timeout=10)]
        assert chunks == ["tok0", "tok1", "tok2"]
    points = _points(reader)
    # five different subjects, one label: the prefix
    assert points[("fabric_agent_request_seconds", (("subject", "tasks.echo"),))] == 5
    assert points[("fabric_agent_errors", (("error", "NoResponders"), ("operation", "request"),
                                           ("subject", "tasks.nobody")))] == 1
    assert points[("fabric_agent_gather_seconds", (("subject", "review.essay"),))] == 1
    assert points[("fabric_agent_stream_seconds", (("subject", "llm.generate"),))] == 1


def test_labels_are_bounded():
    seen: set[str] = set()
    assert subject_label("a.b.c.d", seen) == "a.b"
    assert subject_label("single", seen) == "single"
    for i in range(300):
        subject_label(f"s{i}.x.y", seen, limit=10)
    assert len(seen) == 10
    assert subject_label("new.subject", seen, limit=10) == "other"
    assert subject_label("a.b.zzz", seen, limit=10) == "a.b"


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv("FABRIC_AGENT_METRICS", raising=False)
    assert AgentMetrics.from_env() is None
    monkeypatch.setenv("FABRIC_AGENT_METRICS", "1")
    assert isinstance(AgentMetrics.from_env(), AgentMetrics)

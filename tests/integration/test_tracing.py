"""OpenTelemetry spans, linked across agents through the traceparent header."""

from __future__ import annotations

import json

import pytest

from sdk import connect

pytestmark = pytest.mark.timeout(60)


def _spans(text: str) -> list[dict]:  # type: ignore[type-arg]
    """ConsoleSpanExporter prints one indented JSON object per span."""
    spans, depth, buf = [], 0, []
    for line in text.splitlines():
        if line.startswith("{") and depth == 0:
            buf = []
        buf.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0 and buf and buf[0].startswith("{"):
            spans.append(json.loads("\n".join(buf)))
            buf = []
    return spans


async def test_request_and_handle_spans_share_one_trace(node, monkeypatch, capsys):
    pytest.importorskip("opentelemetry.sdk")
    monkeypatch.setenv("FABRIC_TRACING", "console")
    async with connect("caller", node.url) as caller, connect("callee", node.url) as callee:

        async def handle(msg):  # type: ignore[no-untyped-def]
            return b"done"

        await callee.serve("svc.traced", handle)
        await callee.flush()
        await caller.request("svc.traced", b"x", timeout=5)
        await caller.publish("events.traced", b"y")
    spans = {s["name"]: s for s in _spans(capsys.readouterr().out)}
    request, handled = spans["request svc.traced"], spans["handle svc.traced"]
    assert handled["context"]["trace_id"] == request["context"]["trace_id"]
    assert handled["parent_id"] == request["context"]["span_id"]
    assert "publish events.traced" in spans


async def test_tracing_off_sends_no_traceparent(node, monkeypatch):
    monkeypatch.delenv("FABRIC_TRACING", raising=False)
    async with connect("a", node.url) as a, connect("b", node.url) as b:
        sub = await b.subscribe("events.plain")
        await b.flush()
        await a.publish("events.plain", b"")
        assert (await sub.next(timeout=5)).traceparent == ""


async def test_node_records_a_hop_span_in_the_same_trace(tmp_path, fabric_env, monkeypatch, capsys):
    pytest.importorskip("opentelemetry.sdk")
    from procs import start_node

    node = await start_node(tmp_path / "n.sock", fabric_env, extra=["--tracing", "console"])
    try:
        monkeypatch.setenv("FABRIC_TRACING", "console")
        async with connect("pub", node.url, direct=False) as pub:
            await pub.publish("events.hopped", b"")
            await pub.flush()
        line = await node.wait_line('"name": "hop events.hopped"')
        assert line
        trace_line = await node.wait_line('"trace_id"')
    finally:
        await node.stop()
    published = {s["name"]: s for s in _spans(capsys.readouterr().out)}["publish events.hopped"]
    assert published["context"]["trace_id"] in trace_line

"""Reading a node's monitoring port from a test: a plain HTTP GET over asyncio."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from procs import NodeProcess, start_node
from prometheus_client.parser import text_string_to_metric_families


async def http_get(address: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of ``GET path`` at ``HOST:PORT``."""
    host, port = address.rsplit(":", 1)

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    return await asyncio.wait_for(go(), timeout)


async def get_json(address: str, path: str) -> Any:
    status, body = await http_get(address, path)
    assert status == 200, (status, body)
    return json.loads(body)


async def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, labels without the otel_scope ones)."""
    status, body = await http_get(address, "/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel")))
            samples[(s.name, labels)] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def start_metrics_node(
    tmp, env: dict[str, str], name: str = "n1", extra: list[str] | None = None  # type: ignore[no-untyped-def]
) -> tuple[NodeProcess, str]:
    """A node serving metrics on a free port; returns it and its HOST:PORT."""
    node = await start_node(
        tmp / f"{name}.sock", env, name=name, extra=["--metrics", "127.0.0.1:0", *(extra or [])]
    )
    found = [m.group(1) for line in node.lines if (m := re.search(r"http://([\d.:]+)/", line))]
    assert found, node.lines
    return node, found[0]

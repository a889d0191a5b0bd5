"""The dashboard's graph is the whole mesh: the gateway follows the peers' announced
monitoring ports (node label ``metrics``) from its own node; real node processes."""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.timeout(90)

pytest.importorskip("fastapi")


async def test_dashboard_graph_spans_the_mesh(tmp_path, fabric_env):
    from mesh.conftest import MeshNodes, cloud_toml, edge_toml, free_port
    from websockets.asyncio.client import connect as ws_connect

    from gateways import GatewaySettings, serve_gateway

    m = MeshNodes(tmp_path, fabric_env)
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    metrics = 'metrics = "127.0.0.1:0"\n'
    try:
        for name in ("c1", "c2"):
            await m.start(name, cloud_toml(name, m.cluster, metrics))
        await m.start("e1", edge_toml("edge-paris", [m.cluster["c2"]], metrics))
        await m.wait_links({"c1": {"c2"}, "c2": {"c1", "e1"}, "e1": {"c2"}})
        settings = GatewaySettings(url=m.url("c1"), listen="127.0.0.1:0")
        async with serve_gateway(settings) as url, ws_connect(
            url.replace("http://", "ws://") + "/v1/dashboard?interval=0.5"
        ) as ws:
            view = json.loads(await asyncio.wait_for(ws.recv(), 20))
        graph = view["graph"]
        assert graph["self"] == "c1"
        assert {n["name"]: n["site"] for n in graph["nodes"]} == {
            "c1": "cloud", "c2": "cloud", "e1": "edge-paris"}
        assert all(n["seen"] and not n["unreachable"] for n in graph["nodes"])
        links = {(x["a"], x["b"]): x for x in graph["links"]}
        assert set(links) == {("c1", "c2"), ("c2", "e1")}
        assert links[("c2", "e1")]["kind"] == "leaf" and links[("c1", "c2")]["kind"] == "cluster"
        assert all(x["state"] == "up" for x in links.values())
    finally:
        await m.stop()

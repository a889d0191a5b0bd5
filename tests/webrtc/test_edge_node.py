"""An edge *node* whose only link to the cloud is a WebRTC data channel: it attaches as a leaf
through a relay (edge side) and the gateway's bridge (cloud side), and agents on both nodes
exchange every pattern across it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from procs import NodeProcess, Proc, start_agent, start_node
from webrtc_support import ROOT

from gateways import GatewaySettings, WebRtcRelay, serve_gateway
from sdk import Msg, NoResponders, connect

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def node_status(url: str) -> dict[str, Any]:
    async with connect("probe", url, reconnect=False, direct=False) as agent:
        return await agent.node_status()


async def peers(url: str) -> set[str]:
    return {p["name"] for p in (await node_status(url))["mesh"]["peers"]}


@dataclass
class EdgeOverWebRtc:
    cloud: NodeProcess
    edge: NodeProcess
    relay: WebRtcRelay
    gateway: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeOverWebRtc]:
    tmp = tmp_path_factory.mktemp("edge")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    cluster = f"tcp://127.0.0.1:{free_port()}"
    # Liveness counts frames, and aiortc moves a few MB/s: WAN-sized timers (docs/webrtc.md).
    timers = 'mesh_heartbeat = 0.5\nmesh_dead_after = 10.0\nmesh_transport = "tcp"\n'
    (tmp / "c1.toml").write_text(f'site = "cloud"\ncluster = "{cluster}"\n{timers}')
    cloud = await start_node(
        tmp / "c1.sock", env, name="c1", extra=["--config", str(tmp / "c1.toml")]
    )
    procs = []
    try:
        procs.append(await start_agent("echo", cloud.url, env))
        procs.append(await start_agent("streamer", cloud.url, env))
        procs.append(await start_agent("reviewers", cloud.url, env, "2", "cloud-rev"))
        settings = GatewaySettings(url=cloud.url, mesh_url=cluster, listen="127.0.0.1:0")
        async with serve_gateway(settings) as gateway:
            relay = WebRtcRelay(gateway, to="mesh")
            await relay.start()
            try:
                (tmp / "e1.toml").write_text(
                    f'site = "edge-paris"\nleaf_of = ["{relay.url}"]\n{timers}'
                )
                edge = await start_node(
                    tmp / "e1.sock", env, name="e1", extra=["--config", str(tmp / "e1.toml")]
                )
                procs.append(edge)
                deadline = time.monotonic() + 30
                while "c1" not in await peers(edge.url):
                    assert time.monotonic() < deadline, "edge node never attached over WebRTC"
                    await asyncio.sleep(0.1)  # node status has no change event to await
                yield EdgeOverWebRtc(cloud, edge, relay, gateway)
            finally:
                for proc in procs[3:]:
                    await proc.stop()
                await relay.aclose()
    finally:
        for proc in procs[:3]:
            await proc.stop()
        await cloud.stop()


async def test_the_leaf_link_is_the_data_channel(mesh: EdgeOverWebRtc) -> None:
    assert len(mesh.relay.links()) == 1
    assert "e1" in await peers(mesh.cloud.url)


async def test_edge_agents_reach_cloud_agents(mesh: EdgeOverWebRtc) -> None:
    before = (await node_status(mesh.edge.url))["mesh"]["stats"]["forwarded"]
    async with connect("edge-app", mesh.edge.url) as agent:
        reply = await agent.request("svc.echo", b"from the edge", timeout=10)
        assert bytes(reply.data) == b"from the edge"
        result = await agent.gather("review.essay", b"essay", deadline=10)
        assert sorted(bytes(r.data).decode() for r in result) == ["cloud-rev-0", "cloud-rev-1"]
        assert result.complete
        chunks = [bytes(c.data) async for c in agent.stream("llm.generate", b"20", timeout=20)]
        assert chunks == [f"tok{i}".encode() for i in range(20)]
    # All of it went to the hub, and the hub is only reachable through the data channel.
    assert (await node_status(mesh.edge.url))["mesh"]["stats"]["forwarded"] > before
    assert len(mesh.relay.links()) == 1


async def test_cloud_agents_reach_edge_agents_and_pubsub_both_ways(mesh: EdgeOverWebRtc) -> None:
    async with (
        connect("edge-svc", mesh.edge.url) as edge,
        connect("cloud-app", mesh.cloud.url) as cloud,
    ):

        async def where(msg: Msg) -> bytes:
            return b"answered at the edge: " + bytes(msg.data)

        await edge.serve("edge.where", where)
        down = await edge.subscribe("events.down")
        up = await cloud.subscribe("events.up")
        await edge.flush()
        await cloud.flush()
        # Interest crosses the data channel asynchronously: retry until the hub knows it.
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = await cloud.request("edge.where", b"?", timeout=5)
                break
            except NoResponders:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)  # interest propagation has no event an agent can await
        assert bytes(reply.data) == b"answered at the edge: ?"
        await cloud.publish("events.down", b"to the edge")
        assert bytes((await down.next(timeout=10)).data) == b"to the edge"
        await edge.publish("events.up", b"to the cloud")
        assert bytes((await up.next(timeout=10)).data) == b"to the cloud"


async def test_five_mib_crosses_the_edge_nodes_data_channel(mesh: EdgeOverWebRtc) -> None:
    blob = os.urandom(5 * 1024 * 1024)
    async with connect("edge-big", mesh.edge.url) as agent:
        reply = await agent.request("svc.echo", blob, timeout=60)
    assert bytes(reply.data) == blob


async def test_relay_process_attaches_a_second_edge_node(
    mesh: EdgeOverWebRtc, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateways",
        "relay",
        "--gateway",
        mesh.gateway,
        "--to",
        "mesh",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    relay = Proc(process, "relay")
    edge2: NodeProcess | None = None
    try:
        line = await relay.wait_line("relay ready")
        url = line.split()[2]
        assert url.startswith("tcp://127.0.0.1:")
        (tmp_path / "e2.toml").write_text(
            f'site = "edge-tokyo"\nleaf_of = ["{url}"]\nmesh_transport = "tcp"\n'
            "mesh_heartbeat = 0.5\nmesh_dead_after = 10.0\n"
        )
        edge2 = await start_node(
            tmp_path / "e2.sock", env, name="e2", extra=["--config", str(tmp_path / "e2.toml")]
        )
        deadline = time.monotonic() + 30
        while "e2" not in await peers(mesh.cloud.url):
            assert time.monotonic() < deadline, "second edge node never attached"
            await asyncio.sleep(0.1)  # node status has no change event to await
        async with connect("tokyo-app", edge2.url) as agent:
            assert bytes((await agent.request("svc.echo", b"e2", timeout=10)).data) == b"e2"
    finally:
        if edge2 is not None:
            await edge2.stop()
        assert await relay.stop() == 0


async def test_mesh_offers_need_a_mesh_endpoint_and_permission(
    mesh: EdgeOverWebRtc, tmp_path: Path
) -> None:
    settings = GatewaySettings(url=mesh.cloud.url, listen="127.0.0.1:0")
    async with serve_gateway(settings) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/webrtc/offer?to=mesh", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "no_mesh_bridge"
    auth = tmp_path / "auth.toml"
    auth.write_text(
        '[agents.app]\ncredential = "app-secret"\n[agents.edge-op]\ncredential = "op"\n'
    )
    settings = GatewaySettings(
        url=mesh.cloud.url,
        listen="127.0.0.1:0",
        auth_file=auth,
        mesh_url="tcp://127.0.0.1:1",
        mesh_agents=["edge-op"],
    )
    async with serve_gateway(settings) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post(
            "/v1/webrtc/offer?to=mesh",
            json={"sdp": "v=0", "type": "offer"},
            headers={"authorization": "Bearer app-secret"},
        )
        assert r.status_code == 403
        r = await http.post(
            "/v1/webrtc/offer?to=mesh",
            json={"sdp": "v=0", "type": "offer"},
            headers={"authorization": "Bearer op"},
        )
        assert r.status_code == 400  # allowed, but this "offer" has no fingerprint


async def test_a_dropped_channel_is_replaced_and_the_leaf_comes_back(mesh: EdgeOverWebRtc) -> None:
    # Runs last in this module: it cuts the edge node's only link.
    (channel,) = mesh.relay.links()
    channel.close()
    deadline = time.monotonic() + 30
    while True:
        links = mesh.relay.links()
        if links and links != [channel] and "c1" in await peers(mesh.edge.url):
            break
        assert time.monotonic() < deadline, "the edge node did not come back over a new channel"
        await asyncio.sleep(0.1)  # node status has no change event to await
    async with connect("edge-again", mesh.edge.url) as agent:
        for _ in range(50):  # the hub's interest is replayed to the leaf asynchronously
            try:
                reply = await agent.request("svc.echo", b"back", timeout=10)
                break
            except NoResponders:
                await asyncio.sleep(0.1)
        assert bytes(reply.data) == b"back"

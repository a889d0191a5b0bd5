"""A real mesh for the tests: cloud nodes in a cluster and edge leaves, each a ``fabric node``
process configured by a TOML file, awaited by its ready line and then by its peers' links."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from procs import NodeProcess, start_node, until

from sdk import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Poll a predicate until true, bounded (one helper for the whole suite: tests/procs.py).
eventually = until


async def node_status(url: str) -> dict[str, Any]:
    async with connect("probe", url, reconnect=False) as agent:
        return await agent.node_status()


@dataclass
class MeshNodes:
    """The processes of one test mesh, by name."""

    tmp: Path
    env: dict[str, str]
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    cluster: dict[str, str] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.nodes[name].url

    async def start(self, name: str, toml: str) -> NodeProcess:
        path = self.tmp / f"{name}.toml"
        path.write_text(toml)
        self.configs[name] = path
        proc = await start_node(
            self.tmp / f"{name}.sock", self.env, name=name, extra=["--config", str(path)]
        )
        self.nodes[name] = proc
        return proc

    async def restart(self, name: str) -> NodeProcess:
        proc = await start_node(
            self.tmp / f"{name}.sock",
            self.env,
            name=name,
            extra=["--config", str(self.configs[name])],
        )
        self.nodes[name] = proc
        return proc

    async def peers_of(self, name: str) -> dict[str, dict[str, Any]]:
        status = await node_status(self.url(name))
        return {p["name"]: p for p in status["mesh"]["peers"]}

    async def wait_links(self, expected: dict[str, set[str]], timeout: float = 30.0) -> None:
        """Until every node lists exactly the expected peers."""

        async def check() -> bool:
            for name, peers in expected.items():
                if set(await self.peers_of(name)) != peers:
                    return False
            return True

        await eventually(check, timeout, f"mesh links {expected}")

    async def wait_interest(
        self, at: str, subject: str, queue: str = "", peers: int = 1, timeout: float = 20.0
    ) -> None:
        """Until node ``at`` has heard of interest in ``subject`` from ``peers`` peers."""

        async def check() -> bool:
            found = 0
            for p in (await self.peers_of(at)).values():
                if [subject, queue] in p["interest"]:
                    found += 1
            return found >= peers

        await eventually(check, timeout, f"interest in {subject!r} at {at}")

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.nodes.values()))


CLOUDS = ("c1", "c2", "c3")


def cloud_toml(name: str, cluster: dict[str, str], extra: str = "") -> str:
    seeds = [u for n, u in cluster.items() if n != name]
    return (
        f'site = "cloud"\ncluster = "{cluster[name]}"\nseeds = {seeds!r}\n'
        f"mesh_heartbeat = 0.25\nmesh_dead_after = 2.0\n{extra}"
    ).replace("'", '"')


def edge_toml(site: str, hubs: list[str], extra: str = "") -> str:
    return (
        f'site = "{site}"\nleaf_of = {hubs!r}\n'
        f"mesh_heartbeat = 0.25\nmesh_dead_after = 2.0\n{extra}"
    ).replace("'", '"')


@pytest.fixture
async def mesh_nodes(tmp_path: Path, fabric_env: dict[str, str]) -> AsyncIterator[MeshNodes]:
    nodes = MeshNodes(tmp_path, fabric_env)
    try:
        yield nodes
    finally:
        await nodes.stop()


@pytest.fixture
def mesh_extra() -> str:
    """TOML lines added to every node of ``mesh5`` (tests parametrize it, e.g. the transport)."""
    return ""


@pytest.fixture
async def mesh5(mesh_nodes: MeshNodes, mesh_extra: str) -> MeshNodes:
    """Three cloud nodes in a cluster; edge e1 (site edge-paris) on c1 then c2, edge e2 (site
    edge-tokyo) on c3 then c2. Returns once every link is up."""
    m = mesh_nodes
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in CLOUDS}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster, mesh_extra)) for n in CLOUDS))
    await asyncio.gather(
        m.start("e1", edge_toml("edge-paris", [m.cluster["c1"], m.cluster["c2"]], mesh_extra)),
        m.start("e2", edge_toml("edge-tokyo", [m.cluster["c3"], m.cluster["c2"]], mesh_extra)),
    )
    await m.wait_links(
        {
            "c1": {"c2", "c3", "e1"},
            "c2": {"c1", "c3"},
            "c3": {"c1", "c2", "e2"},
            "e1": {"c1"},
            "e2": {"c3"},
        }
    )
    return m

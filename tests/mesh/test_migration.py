"""Agents moving between nodes while messages stream to them: nothing lost, nothing twice,
order kept, state version continued, the old lease fenced."""

from __future__ import annotations

import asyncio
import sys

import pytest

from sdk import Fenced, connect

from .conftest import MeshNodes, cloud_toml, edge_toml, free_port

pytestmark = [pytest.mark.timeout(150), pytest.mark.faults]

COUNT = 400


async def _mesh(m: MeshNodes) -> None:
    """c1 and c2 in a cluster, e1 (edge-paris) a leaf of c1."""
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster)) for n in ("c1", "c2")))
    await m.start("e1", edge_toml("edge-paris", [m.cluster["c1"]]))
    await m.wait_links({"c1": {"c2", "e1"}, "c2": {"c1"}, "e1": {"c1"}})


@pytest.mark.parametrize(("origin", "target"), [("c1", "c2"), ("e1", "c2")])
async def test_migration_under_a_steady_stream(mesh_nodes, agent_procs, origin, target):
    m = mesh_nodes
    await _mesh(m)
    got: list[int] = []
    all_in = asyncio.Event()
    flowing = asyncio.Event()
    state = bytes(range(256)) * 4096  # 1 MiB

    def record(msg):  # type: ignore[no-untyped-def]
        got.append(int(msg.text()))
        if len(got) >= 60:
            flowing.set()
        if len(got) >= COUNT:
            all_in.set()

    async with connect("mover", m.url(origin)) as mover:
        await mover.subscribe("agents.mover.inbox", callback=record)
        lease = await mover.state.acquire("context", ttl=60)
        version = await mover.state.put("context", state)
        await mover.flush()
        await m.wait_interest("c2", "agents.mover.inbox")  # the sender's node routes to us
        sender = await agent_procs(
            "steady-publisher", m.url("c2"), "agents.mover.inbox", str(COUNT), "5"
        )
        await asyncio.wait_for(flowing.wait(), 30)  # migrate mid-stream, messages still coming
        report = await mover.migrate(m.url(target))
        print(f"migrated {origin}->{target} in {report.elapsed * 1e3:.1f} ms at message "
              f"{len(got)}, {report.duplicates_dropped} duplicates dropped, "
              f"{report.keys_moved} keys ({report.bytes_moved} bytes) carried")
        assert report.node == target
        assert report.keys_moved == 1 and report.bytes_moved == len(state)
        assert mover.node == target
        await sender.wait_line("done", timeout=60)
        await asyncio.wait_for(all_in.wait(), 30)
        assert got == list(range(COUNT)), "every message once, in order"
        value, now_version = await mover.state.get("context")
        assert bytes(value) == state
        assert now_version == version, "the state version continued on the new node"
        with pytest.raises(Fenced):
            await mover.state.put("context", b"from the old instance", token=lease.token)
        assert mover.state.lease("context").token > lease.token  # type: ignore[union-attr]


async def test_fabric_agent_migrate_moves_a_running_agent(mesh_nodes, agent_procs, fabric_env):
    m = mesh_nodes
    await _mesh(m)
    sub = await agent_procs("subscriber", m.url("c1"), "agents.remote.>")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "agent", "migrate", "subscriber", "--to", m.url("c2"),
        "--url", m.url("c1"), env=fabric_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode()
    assert "subscriber now on node c2" in out.decode()
    async with connect("probe", m.url("c2")) as probe:
        names = [s["name"] for s in (await probe.node_status())["sessions"]]
        assert "subscriber" in names
        await probe.publish("agents.remote.ping", b"after")
        line = await sub.wait_line("got agents.remote.ping")
    assert line.endswith("after")

"""A2A and MCP over the fabric across sites: the swarm's agents on a cloud node, their clients on
an edge node attached to it as a leaf (real node processes, the mesh over ZeroMQ/TCP)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import Role, SendMessageRequest
from mcp import Client
from procs import READY_TIMEOUT, Proc

from sdk import connect
from sdk.a2a import fabric_client, fetch_card, multicast
from sdk.mcp import fabric_transport

from .conftest import MeshNodes, cloud_toml, edge_toml, free_port

pytestmark = pytest.mark.timeout(150)

AGENTS = Path(__file__).resolve().parents[2] / "examples" / "swarm" / "agents.py"


async def start_role(role: str, url: str, env: dict[str, str]) -> Proc:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENTS), role, url, env=env, stdout=asyncio.subprocess.PIPE
    )
    proc = Proc(process, f"swarm {role}")
    try:
        await proc.wait_line("ready", timeout=READY_TIMEOUT * 2)
    except BaseException:
        await proc.stop()
        raise
    return proc


async def test_a2a_and_mcp_from_an_edge_site_to_agents_in_the_cloud(
    mesh_nodes: MeshNodes,
) -> None:
    m = mesh_nodes
    m.cluster = {"c1": f"tcp://127.0.0.1:{free_port()}"}
    await m.start("c1", cloud_toml("c1", m.cluster))
    await m.start("e1", edge_toml("edge-paris", [m.cluster["c1"]]))
    await m.wait_links({"c1": {"e1"}, "e1": {"c1"}})
    roles = await asyncio.gather(
        *(start_role(r, m.url("c1"), m.env) for r in ("llm", "reviewers", "tools"))
    )
    try:
        # A leaf forwards to its hub whatever it has no local interest for: the edge agent's
        # requests reach the cloud agents once the cloud node knows their subscriptions.
        async with connect("edge-client", m.url("e1")) as agent:
            card = await fetch_card(agent, "llm", timeout=10)
            assert card.name == "llm"
            client = await fabric_client(agent, "llm", timeout=10)
            request = SendMessageRequest()
            request.message.role = Role.ROLE_USER
            request.message.message_id = uuid.uuid4().hex
            request.message.parts.add().text = "across sites tokens=7"
            tokens = []
            async for event in client.send_message(request):
                if event.HasField("artifact_update"):
                    tokens += [p.text for p in event.artifact_update.artifact.parts if p.text]
            assert len(tokens) == 7

            votes = await multicast(agent, "reviewers", "from the edge", quorum=3, deadline=3.0)
            assert len(votes.replies) >= 3
            assert "reviewer-4" not in votes.answered

            async with Client(fabric_transport(agent, "tools")) as tools:
                result = await tools.call_tool("add", {"a": 40, "b": 2})
                assert result.content[0].text == "42"  # type: ignore[union-attr]
    finally:
        for proc in roles:
            await proc.stop()

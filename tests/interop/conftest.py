"""One node, the swarm's agents (examples/swarm/agents.py) as real processes, and an in-process
gateway, shared by the tests of a module."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from procs import READY_TIMEOUT, NodeProcess, Proc, start_node

from gateways import GatewaySettings, serve_gateway

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "swarm" / "agents.py"
#: The gateway's A2A message limit in these tests (small, so an oversized message is cheap).
A2A_MAX = 64 * 1024


@dataclass
class Swarm:
    node: NodeProcess
    env: dict[str, str]
    tmp: Path
    agents: dict[str, Proc] = field(default_factory=dict)


def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "SWARM_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    return env


async def start_role(role: str, url: str, env: dict[str, str]) -> Proc:
    """Start one swarm role and wait for its ready line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENTS), role, url, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    proc = Proc(process, f"swarm {role}")
    try:
        await proc.wait_line("ready", timeout=READY_TIMEOUT * 2)
    except BaseException:
        await proc.stop()
        raise
    return proc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def swarm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Swarm]:
    tmp = tmp_path_factory.mktemp("swarm")
    env = child_env(tmp)
    node = await start_node(tmp / "node.sock", env, name="swarm-node")
    fab = Swarm(node, env, tmp)
    try:
        roles = await asyncio.gather(
            *(start_role(r, node.url, env) for r in ("llm", "reviewers", "tools", "planner"))
        )
        fab.agents.update(zip(("llm", "reviewers", "tools", "planner"), roles, strict=True))
        yield fab
    finally:
        for proc in fab.agents.values():
            await proc.stop()
        await node.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(swarm: Swarm) -> AsyncIterator[str]:
    settings = GatewaySettings(
        url=swarm.node.url, listen="127.0.0.1:0", a2a_max_message=A2A_MAX, webrtc=False
    )
    async with serve_gateway(settings) as url:
        yield url

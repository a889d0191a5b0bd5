"""One node, the swarm's agents (examples/swarm/agents.py) as real processes, and an in-process
gateway, shared by the tests of this directory (starting five Python processes is the slow part
on a busy 2-core machine; tests that cancel work tag their prompts, so they never see another
test's events)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

# The checkout goes ahead of tests/ on sys.path (as in tests/gateways/conftest.py), so that
# `gateways` is the package, never the tests/gateways directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from procs import start_node

from gateways import GatewaySettings, serve_gateway

from .interop_support import A2A_MAX, Swarm, child_env, start_role


@pytest_asyncio.fixture(scope="package", loop_scope="package")
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


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def gateway(swarm: Swarm) -> AsyncIterator[str]:
    settings = GatewaySettings(
        url=swarm.node.url, listen="127.0.0.1:0", a2a_max_message=A2A_MAX, webrtc=False
    )
    async with serve_gateway(settings) as url:
        yield url

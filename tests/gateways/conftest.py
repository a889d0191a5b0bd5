"""One real node, real agent processes and in-process gateways per test module.

Starting Python processes is the slow part on a busy 2-core machine, so the node and its agents
are shared by the tests of a module; each test still talks to them over real sockets.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

# The checkout goes ahead of tests/ on sys.path: tests/gateways/ would otherwise shadow the
# `gateways` package as an empty namespace package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway_support import AUTH_FILE, MAX_BODY, NODE_MAX_PAYLOAD, Fabric, child_env
from procs import start_agent, start_node

from gateways import GatewaySettings, serve_gateway


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fabric(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fabric]:
    """A node (1 MiB payload limit) with the echo and streamer agents of tests/agent_roles.py."""
    tmp = tmp_path_factory.mktemp("gw")
    env = child_env(tmp)
    node = await start_node(
        tmp / "node.sock",
        env,
        name="gw-node",
        extra=["--max-payload", str(NODE_MAX_PAYLOAD), "--listen", "tcp://127.0.0.1:0"],
    )
    fab = Fabric(node, env, tmp)
    try:
        fab.agents["echo"] = await start_agent("echo", node.url, env)
        fab.agents["streamer"] = await start_agent("streamer", node.url, env)
        yield fab
    finally:
        for proc in fab.agents.values():
            await proc.stop()
        await node.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(fabric: Fabric) -> AsyncIterator[str]:
    """An open gateway (no auth file) in front of the module node; yields its base URL."""
    settings = GatewaySettings(url=fabric.node.url, listen="127.0.0.1:0", max_body=MAX_BODY)
    async with serve_gateway(settings) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def auth_gateway(fabric: Fabric) -> AsyncIterator[str]:
    """A gateway that requires bearer tokens (alice, bob) in front of the module node."""
    path = fabric.tmp / "auth.toml"
    path.write_text(AUTH_FILE)
    settings = GatewaySettings(
        url=fabric.node.url, listen="127.0.0.1:0", max_body=MAX_BODY, auth_file=path
    )
    async with serve_gateway(settings) as url:
        yield url

"""A real node with agent processes, and a gateway whose WebRTC signaling edge agents use."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[2]
# The checkout ahead of tests/: tests/gateways/ would otherwise shadow the `gateways` package.
sys.path.insert(0, str(ROOT))

from procs import start_agent, start_node  # noqa: E402
from webrtc_support import AUTH_FILE, Cloud  # noqa: E402

from gateways import GatewaySettings, serve_gateway  # noqa: E402


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cloud(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cloud]:
    """Node, echo/streamer/reviewers agents, an open gateway and one requiring tokens."""
    tmp = tmp_path_factory.mktemp("rtc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    # Liveness counts whole frames: over aiortc's SCTP (a few MB/s) a 5 MiB message keeps the
    # PINGs queued behind it for seconds, so the edge node uses a WAN-sized heartbeat
    # (docs/webrtc.md, "Heartbeats on slow links").
    node = await start_node(
        tmp / "node.sock", env, name="cloud-1", extra=["--heartbeat-interval", "5"]
    )
    fab = Cloud(node, env, tmp)
    (tmp / "auth.toml").write_text(AUTH_FILE)
    try:
        fab.agents["echo"] = await start_agent("echo", node.url, env)
        fab.agents["streamer"] = await start_agent("streamer", node.url, env)
        fab.agents["reviewers"] = await start_agent("reviewers", node.url, env, "3", "rev")
        open_settings = GatewaySettings(url=node.url, listen="127.0.0.1:0")
        auth_settings = GatewaySettings(
            url=node.url, listen="127.0.0.1:0", auth_file=tmp / "auth.toml"
        )
        async with serve_gateway(open_settings) as url, serve_gateway(auth_settings) as auth:
            fab.gateway, fab.auth_gateway = url, auth
            yield fab
    finally:
        for proc in fab.agents.values():
            await proc.stop()
        await node.stop()

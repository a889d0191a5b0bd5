"""What a newcomer meets running ``fabric gateway``: API docs that work offline, one clear line
for a port in use, and a warning when no node answers at the URL it was given."""

from __future__ import annotations

import asyncio
import re
import socket
import sys

import httpx
import pytest
from gateway_support import Fabric
from procs import Proc

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def test_docs_and_their_assets_come_from_the_gateway_itself(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as c:
        for page, needle in (("/docs", "SwaggerUIBundle"), ("/redoc", "<redoc")):
            r = await c.get(page)
            assert r.status_code == 200 and needle in r.text
            # Nothing from the internet: every asset is a path on the gateway.
            assert "cdn." not in r.text and "fonts.googleapis" not in r.text
            assets = re.findall(r'(?:src|href)="(/[^"]+)"', r.text)
            assert assets, r.text
            for asset in assets:
                got = await c.get(asset)
                assert got.status_code == 200, asset
                assert len(got.content) > 1000, asset
        bundle = await c.get("/docs-assets/swagger-ui-bundle.js")
        assert len(bundle.content) > 500_000  # the real Swagger UI, not a stub
        assert "javascript" in bundle.headers["content-type"]
        spec = (await c.get("/openapi.json")).json()
        assert "/docs-assets" not in str(spec["paths"])


async def _gateway_exit(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "gateway", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 40)
    return process.returncode or 0, out.decode(), err.decode()


async def test_a_port_in_use_is_one_line_without_a_traceback(fabric: Fabric) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await _gateway_exit(
            "--url", fabric.node.url, "--listen", f"127.0.0.1:{port}", env=fabric.env
        )
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0] and "--listen" in lines[0]
    assert "Traceback" not in err and "ready" not in out


async def test_no_node_at_the_url_is_said_at_start_not_only_on_health(fabric: Fabric) -> None:
    env = {k: v for k, v in fabric.env.items() if k != "XDG_RUNTIME_DIR"}
    # What the old docs produced with XDG_RUNTIME_DIR unset.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "gateway", "--url", "unix:///fabric/node.sock",
        "--listen", "127.0.0.1:0", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    proc = Proc(process, "fabric gateway")
    try:
        line = await proc.wait_line("gateway ready")
        assert "not reachable yet" in line
        assert process.stderr is not None
        warning = (await asyncio.wait_for(process.stderr.readline(), 10)).decode()
        assert "no node answers at unix:///fabric/node.sock" in warning
        assert "fabric node" in warning and "XDG_RUNTIME_DIR is not set" in warning
    finally:
        await proc.stop()


async def test_a_reachable_node_is_said_so(fabric: Fabric) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "gateway", "--url", fabric.node.url,
        "--listen", "127.0.0.1:0", env=fabric.env,
        stdout=asyncio.subprocess.PIPE,
    )
    proc = Proc(process, "fabric gateway")
    try:
        line = await proc.wait_line("gateway ready")
        assert f"node {fabric.node.url}, reachable" in line and "/docs" in line
    finally:
        await proc.stop()

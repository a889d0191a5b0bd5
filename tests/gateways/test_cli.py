"""``fabric gateway`` as a real process."""

from __future__ import annotations

import asyncio
import re
import sys

import httpx
import pytest
from gateway_support import Fabric
from procs import Proc

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def test_fabric_gateway_serves_until_sigterm(fabric: Fabric) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabric",
        "gateway",
        "--url",
        fabric.node.url,
        "--listen",
        "127.0.0.1:0",
        env=fabric.env,
        stdout=asyncio.subprocess.PIPE,
    )
    proc = Proc(process, "fabric gateway")
    try:
        line = await proc.wait_line("gateway ready")
        found = re.search(r"http://[0-9.]+:[0-9]+", line)
        assert found, line
        async with httpx.AsyncClient(base_url=found.group(0)) as c:
            r = await c.post("/v1/request/svc.echo", json={"text": "via cli"})
            assert (r.status_code, r.json()["text"]) == (200, "via cli")
            page = await c.get("/")
            assert page.status_code == 200 and "Agent Fabric" in page.text
    finally:
        code = await proc.stop()
    assert code == 0


async def test_bad_listen_address_exits_with_an_error(fabric: Fabric) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabric",
        "gateway",
        "--listen",
        "nonsense",
        env=fabric.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert b"HOST:PORT" in err

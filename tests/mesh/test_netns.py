"""deploy/netns/mesh.sh for real: cloud and edge hosts in network namespaces, 20 ms each way
between sites. An edge request served at its own site never crosses the delayed link."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sdk import Msg, connect

from .conftest import eventually, node_status

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "netns" / "mesh.sh"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = subprocess.run(["ip", "netns", "add", "af-probe"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", "af-probe"], capture_output=True)
    if subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("af-"):
        return "af-* namespaces already exist (another run?)"
    return None


async def test_edge_request_stays_at_the_edge(tmp_path: Path, fabric_env: dict[str, str]) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = dict(fabric_env, AF_DIR=str(tmp_path / "netns"), AF_DELAY="20ms", PYTHON=sys.executable)
    try:
        up = await asyncio.create_subprocess_exec(
            str(SCRIPT), "up", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(up.communicate(), 90)
        assert up.returncode == 0, out.decode()
        assert b"20ms each way" in out
        base = tmp_path / "netns"
        edge, cloud = f"unix://{base}/edge1.sock", f"unix://{base}/cloud1.sock"
        async with (
            connect("edge-worker", edge) as ew,
            connect("cloud-worker", cloud) as cw,
            connect("edge-client", edge) as client,
        ):

            async def at(msg: Msg, where: str = "") -> str:
                return where

            # both sites have a member of the same group; only the cloud serves svc.far
            await ew.serve("svc.near", lambda m: at(m, "edge"), queue="g")
            await cw.serve("svc.near", lambda m: at(m, "cloud"), queue="g")
            await cw.serve("svc.far", lambda m: at(m, "cloud"))
            await ew.flush()
            await cw.flush()

            async def edge_knows_cloud() -> bool:
                st = await node_status(edge)
                return any(["svc.far", ""] in p["interest"] for p in st["mesh"]["peers"])

            await eventually(edge_knows_cloud, 30, "cloud interest at the edge")

            async def timed(subject: str, n: int) -> tuple[list[float], Counter[str]]:
                times, where = [], Counter[str]()
                for _ in range(n):
                    t0 = time.perf_counter()
                    reply = await client.request(subject, b"x", timeout=5)
                    times.append(time.perf_counter() - t0)
                    where[reply.text()] += 1
                return times, where

            await timed("svc.near", 20)  # warm-up
            near, near_where = await timed("svc.near", 200)
            far, far_where = await timed("svc.far", 20)
        assert near_where == {"edge": 200}  # the local member took every one
        near_p50 = statistics.median(near)
        print(
            f"netns: edge-local p50 {near_p50 * 1e6:.0f} us, to cloud p50 "
            f"{statistics.median(far) * 1e3:.1f} ms"
        )
        assert near_p50 < 0.003  # never paid the 20 ms link
        assert max(near) < 0.020
        assert far_where == {"cloud": 20} and min(far) >= 0.020
    finally:
        down = await asyncio.create_subprocess_exec(str(SCRIPT), "down", env=env)
        await asyncio.wait_for(down.wait(), 60)

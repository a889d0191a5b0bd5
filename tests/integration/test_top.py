"""fabric top under a real pseudo-terminal: it draws, refreshes, and quits on q."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import sys
import time

import pytest
from metrics._scrape import start_metrics_node

from sdk import connect

pytestmark = pytest.mark.timeout(90)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _rate_shown(text: str) -> float:
    """The largest msgs in/s the screen showed for node n1 (0 when none)."""
    best = 0.0
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 6 and cells[1] == "n1" and cells[2] == "local":
            value = cells[5].replace("k", "e3").replace("M", "e6")
            try:
                best = max(best, float(value))
            except ValueError:
                continue
    return best


def _read_until(fd: int, needles: list[str], timeout: float, moving: bool = False) -> str:
    """Everything the terminal showed until every needle appeared (ANSI stripped), and
    with ``moving`` until n1's msgs in/s was above zero."""
    seen = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            text = _ANSI.sub("", seen.decode(errors="replace"))
            if all(n in text for n in needles) and (not moving or _rate_shown(text) > 0):
                return text
    raise AssertionError(f"screen never showed {needles}:\n{_ANSI.sub('', seen.decode())}")


async def test_top_draws_refreshes_and_quits_on_q(tmp_path, fabric_env):
    node, _ = await start_metrics_node(tmp_path, fabric_env)
    master, slave = pty.openpty()
    env = dict(fabric_env, COLUMNS="180", LINES="40", TERM="xterm-256color")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "top", "--url", node.url, "--interval", "0.2",
        stdin=slave, stdout=slave, stderr=slave, env=env,
    )
    os.close(slave)
    try:
        async with connect("busy", node.url, direct=False) as agent:
            async def echo(msg):  # type: ignore[no-untyped-def]
                return b"ok"

            await agent.serve("svc.top", echo)
            for _ in range(64):
                await agent.request("svc.top", b"x", timeout=10)
            loop = asyncio.get_running_loop()
            screen = await loop.run_in_executor(
                None, _read_until, master, ["nodes", "msgs in/s", "hop p99", "n1", "peers",
                                            "q or Ctrl-C to quit"], 30.0
            )
            (tmp_path / "top-screen.txt").write_text(screen)  # the captured screen
            # refreshing in place, and the rates move while the node is busy
            stop = asyncio.Event()

            async def publish() -> None:
                for _ in range(20_000):
                    if stop.is_set():
                        return
                    await agent.publish("events.top", b"x")
                    await asyncio.sleep(0.001)

            busy = asyncio.create_task(publish())
            try:
                moving = await loop.run_in_executor(
                    None, _read_until, master, ["fabric top · every"], 30.0, True
                )
            finally:
                stop.set()
                await busy
            assert _rate_shown(moving) > 0
        os.write(master, b"q")
        code = await asyncio.wait_for(proc.wait(), 20)
        assert code == 0
        row = next(line for line in screen.splitlines() if line.strip().startswith(("│ n1", "n1"))
                   or "│ n1 " in line)
        assert "local" in row
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        await node.stop()


async def test_top_once_without_a_terminal_and_unreachable_node(node, fabric_env):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "top", "--url", node.url, "--once", "--interval", "0.1",
        env=dict(fabric_env, COLUMNS="200"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert "n1" in out.decode() and "msgs in/s" in out.decode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "top", "--url", "unix:///nonexistent/x.sock", "--once",
        env=fabric_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "Traceback" not in err.decode() and "cannot reach node" in err.decode()


async def test_top_mesh_follows_peers_to_every_node(tmp_path, fabric_env):
    from mesh.conftest import MeshNodes, cloud_toml, edge_toml, free_port

    m = MeshNodes(tmp_path, fabric_env)
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    metrics = 'metrics = "127.0.0.1:0"\n'
    try:
        for name in ("c1", "c2"):
            await m.start(name, cloud_toml(name, m.cluster, metrics))
        await m.start("e1", edge_toml("edge-paris", [m.cluster["c2"]], metrics))  # two hops
        await m.wait_links({"c1": {"c2"}, "c2": {"c1", "e1"}, "e1": {"c2"}})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fabric", "top", "--url", m.url("c1"), "--mesh", "--once",
            "--interval", "0.2", env=dict(fabric_env, COLUMNS="200"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
        rows = {cells[1]: cells for line in out.decode().splitlines()
                if len(cells := [c.strip() for c in line.split("│")]) > 10}
        assert {"c1", "c2", "e1"} <= set(rows), out.decode()
        assert rows["e1"][2] == "edge-paris"
    finally:
        await m.stop()

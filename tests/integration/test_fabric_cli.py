"""The fabric command, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode()


async def test_demo_shows_every_pattern(fabric_env):
    code, out = await _run("demo", env=fabric_env)
    assert code == 0, out
    for expected in ("planner got events.done", "NoResponders at once", "Timeout:",
                     "3 of 3 reviewers answered (complete=True)", "streamed: tokens"):
        assert expected in out, out


async def test_status_lists_sessions_and_subscriptions(node, agent_procs, fabric_env):
    await agent_procs("echo", node.url)
    code, out = await _run("status", "--url", node.url, "--json", env=fabric_env)
    assert code == 0, out
    snapshot = json.loads(out)
    echo = next(s for s in snapshot["sessions"] if s["name"] == "echo-1")
    assert {"subject": "svc.echo", "queue": "echo", "sid": 1} in echo["subscriptions"]


async def test_status_without_a_node_is_a_clear_error(tmp_path, fabric_env):
    code, out = await _run("status", "--url", f"unix://{tmp_path}/none.sock", env=fabric_env)
    assert code == 1
    assert "cannot reach node" in out


async def test_node_refuses_invalid_settings(tmp_path, fabric_env):
    code, out = await _run("node", "--socket", str(tmp_path / "n.sock"), "--max-payload", "-5",
                           env=fabric_env)
    assert code == 2
    assert "invalid settings" in out and "max_payload" in out


async def test_node_reads_environment_and_toml(tmp_path, fabric_env):
    config = tmp_path / "node.toml"
    config.write_text('name = "from-toml"\nsite = "edge-paris"\n')
    env = {**fabric_env, "FABRIC_SITE": "from-env"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "node", "--config", str(config),
        "--socket", str(tmp_path / "n.sock"), env=env, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        # flags > environment > TOML file
        assert "fabric node from-toml (site from-env) ready" in line
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "SIGTERM is a clean shutdown"


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello.py"


async def test_readme_example_runs_against_a_node(node, fabric_env):
    example = EXAMPLE
    env = {**fabric_env, "FABRIC_URL": node.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(example), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert out.decode().strip() == "hello, world"

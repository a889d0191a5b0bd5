"""Acknowledged state survives kill -9 of the node; fencing tokens never go back (issue 15, #2).

A real node process with the embedded store, killed with SIGKILL while an agent writes; a new
node process on the same socket (so the same state file) must hand back every acknowledged
write, and must refuse the token of a lease granted before the crash (the zombie).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from procs import NodeProcess, start_node

from fabric.errors import FabricError, Fenced
from sdk import connect

pytestmark = [pytest.mark.timeout(120), pytest.mark.faults]

KEYS = 50
KILL_AFTER = 300  # acknowledged writes before the kill


async def _write_until_killed(
    node: NodeProcess, acked: dict[str, tuple[int, bytes]], unknown: dict[str, bytes]
) -> None:
    """Write ``k0..k49`` round-robin; SIGKILL the node right after the KILL_AFTER-th ack while
    the next writes are in flight. ``acked`` gets each key's last acknowledged (version, value);
    ``unknown`` the writes the node may or may not have committed before it died."""
    async with connect("writer", node.url, reconnect=False, direct=False) as agent:
        lease = await agent.state.acquire("fenced", ttl=60)
        await agent.state.put("fenced", b"before the crash")
        acked["fenced"] = (1, b"before the crash")
        acked["token"] = (lease.token, b"")
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            key, value = f"k{i % KEYS}", f"value {i}".encode()
            unknown[key] = value
            try:
                version = await agent.state.put(key, value)
            except FabricError:
                return  # the node died under it: not acknowledged, outcome unknown
            acked[key] = (version, value)
            done += 1
            if done == KILL_AFTER:
                node.kill(signal.SIGKILL)

        # Eight writers at once, so the kill lands with writes in flight.
        for start in range(0, 10_000, 8):
            if node.process.returncode is not None or done >= KILL_AFTER:
                break
            await asyncio.gather(*(one(i) for i in range(start, start + 8)))
        await node.process.wait()


@pytest.mark.parametrize("mode", ["always", "everysec"])
async def test_acknowledged_writes_survive_kill_9(
    tmp_path: Path, fabric_env: dict[str, str], mode: str
) -> None:
    env = {**fabric_env, "FABRIC_STATE_DURABILITY": mode}
    sock = tmp_path / "node.sock"
    node = await start_node(sock, env, name="n1")
    acked: dict[str, tuple[int, bytes]] = {}
    unknown: dict[str, bytes] = {}
    try:
        await _write_until_killed(node, acked, unknown)
        assert node.process.returncode == -signal.SIGKILL
        node = await start_node(sock, env, name="n1")
        lost = []
        async with connect("writer", node.url, direct=False) as agent:
            for i in range(KEYS):
                key = f"k{i}"
                if key not in acked:
                    continue
                version, value = acked[key]
                got, got_version = await agent.state.get(key)
                # The acknowledged write, or (one version on) the write in flight at the kill.
                if (got_version, bytes(got)) != (version, value) and not (
                    got_version == version + 1 and bytes(got) == unknown[key]
                ):
                    lost.append((key, version, got_version))
        assert not lost, f"acknowledged writes lost after kill -9: {lost[:5]}"
        assert len([k for k in acked if k.startswith("k")]) == KEYS
    finally:
        await node.stop()


async def test_a_zombie_token_from_before_the_restart_is_fenced(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    sock = tmp_path / "node.sock"
    node = await start_node(sock, fabric_env, name="n1")
    try:
        async with connect("worker", node.url, reconnect=False, direct=False) as zombie:
            old = await zombie.state.acquire("job", ttl=60)
            assert await zombie.state.put("job", b"zombie v1") == 1
            node.kill(signal.SIGKILL)
            await node.process.wait()

        node = await start_node(sock, fabric_env, name="n1")
        async with (
            connect("worker", node.url, direct=False) as fresh,
            connect("worker", node.url, direct=False) as zombie,
        ):
            value, version = await fresh.state.get("job")
            assert (bytes(value), version) == (b"zombie v1", 1), "value and version came back"
            new = await fresh.state.acquire("job", ttl=60)
            assert new.token > old.token, "fencing tokens never go back across a restart"
            assert await fresh.state.put("job", b"new holder") == 2
            # The zombie still holds the token it was given before the restart.
            with pytest.raises(Fenced):
                await zombie.state.put("job", b"zombie v2", token=old.token)
            value, version = await fresh.state.get("job")
            assert (bytes(value), version) == (b"new holder", 2)
    finally:
        await node.stop()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_large_values_are_held_once_not_once_more_for_the_file(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    """64 MiB of values written twice over: the node holds them once (the file is on disk,
    SQLite's cache is bounded), and a restarted node reads them back into one copy."""
    sock = tmp_path / "node.sock"
    node = await start_node(sock, fabric_env, name="n1")
    try:
        base = _rss_mib(node.pid)
        async with connect("big", node.url, direct=False) as agent:
            for round_ in range(2):
                for i in range(16):
                    value = bytes([round_ * 16 + i]) * (4 * 1024 * 1024)
                    await agent.state.put(f"big{i}", value)
        grown = _rss_mib(node.pid) - base
        node.kill(signal.SIGKILL)
        await node.process.wait()
        node = await start_node(sock, fabric_env, name="n1")
        reloaded = _rss_mib(node.pid) - base
        async with connect("big", node.url, direct=False) as agent:
            value, version = await agent.state.get("big15")
            assert version == 2 and bytes(value[:1]) == bytes([31])
        print(f"64 MiB of values: node RSS +{grown:.0f} MiB written, +{reloaded:.0f} MiB reloaded")
        assert grown < 64 * 1.5 + 32, f"node RSS grew by {grown:.0f} MiB for 64 MiB of values"
        assert reloaded < 64 * 1.5 + 32, f"reloading took {reloaded:.0f} MiB for 64 MiB"
    finally:
        await node.stop()

"""One node per Unix socket: a second node refuses in one line naming the socket and the PID
that holds it, the first keeps serving, and a node never deletes a socket it does not own."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from procs import start_node

from fabric.errors import SocketInUse
from fabric.socket_claim import claim_socket
from sdk import connect

pytestmark = pytest.mark.timeout(90)


async def _node_exit(sock: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "node", "--name", "second", "--socket", str(sock),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_second_node_on_a_live_socket_refuses_and_the_first_still_serves(
    node, agent_procs, fabric_env
):
    await agent_procs("echo", node.url)
    code, out, err = await _node_exit(node.socket, fabric_env)
    assert code == 1
    assert "ready" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(node.socket) in lines[0] and f"pid {node.pid}" in lines[0], lines[0]
    assert "--socket" in lines[0]  # the next step
    # The refused node removed nothing: the socket is there and the first node answers on it,
    # for agents that connect after the refusal too.
    assert node.socket.is_socket()
    async with connect("late-comer", node.url, reconnect=False) as agent:
        reply = await agent.request("svc.echo", b"still here", timeout=10)
        assert bytes(reply.data) == b"still here"
    assert node.process.returncode is None


async def test_a_node_after_a_killed_one_takes_the_stale_socket(tmp_path, fabric_env):
    sock = tmp_path / "n.sock"
    first = await start_node(sock, fabric_env, name="first")
    first.kill(signal.SIGKILL)
    await first.process.wait()
    assert sock.exists()  # left behind by kill -9
    second = await start_node(sock, fabric_env, name="second")
    try:
        async with connect("a", second.url, reconnect=False) as agent:
            status = await agent.node_status()
            assert status["node"] == "second"
    finally:
        await second.stop()
    assert not sock.exists() and not sock.with_name("n.sock.lock").exists()


def test_a_claim_never_removes_a_socket_it_did_not_bind(tmp_path: Path) -> None:
    path = tmp_path / "node.sock"
    claim = claim_socket(path)
    mine = socket.socket(socket.AF_UNIX)
    mine.bind(str(path))
    claim.bound()
    # Someone replaces the file (an operator, another tool): it is not ours any more.
    path.unlink()
    theirs = socket.socket(socket.AF_UNIX)
    theirs.bind(str(path))
    try:
        claim.release()
        assert path.exists()
        assert not path.with_name("node.sock.lock").exists()
    finally:
        mine.close()
        theirs.close()


def test_a_listener_without_a_claim_is_found_by_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "node.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    try:
        with pytest.raises(SocketInUse) as caught:
            claim_socket(path)
        assert caught.value.pid == os.getpid()
        assert f"pid {os.getpid()}" in str(caught.value)
    finally:
        listener.close()
    claim_socket(path).release()  # nobody accepts any more: a stale file, claimed


def test_two_claims_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "node.sock"
    first = claim_socket(path)
    with pytest.raises(SocketInUse) as caught:
        claim_socket(path)
    assert caught.value.pid == os.getpid()
    first.release()
    claim_socket(path).release()

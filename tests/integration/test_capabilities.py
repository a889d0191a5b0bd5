"""Shared memory and direct paths follow what the node says in its WELCOME, not the URL:
a real node over its Unix socket and over TCP, and a transport plugged in by scheme."""

from __future__ import annotations

import socket

import pytest
from procs import start_node

from fabric.transports import open_unix_link
from sdk import connect
from sdk._capabilities import Capabilities
from sdk._dial import DEFAULT_MAX_PAYLOAD, register_scheme

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_welcome_says_which_paths_a_session_may_use(tmp_path, fabric_env):
    port = _free_port()
    node = await start_node(
        tmp_path / "n.sock", fabric_env, extra=["--listen", f"tcp://127.0.0.1:{port}"]
    )
    try:
        async with (
            connect("local", node.url) as local,
            connect("remote", f"tcp://127.0.0.1:{port}") as remote,
        ):
            assert local._core.conn.welcome["paths"] == {"shm": True, "direct": True}
            assert local._core.conn.caps == Capabilities(shared_memory=True, direct=True)
            assert local._core.direct_paths() is not None
            assert remote._core.conn.welcome["paths"] == {"shm": False, "direct": False}
            assert remote._core.conn.caps == Capabilities()
            # The node did not take the remote agent's direct socket: it is closed again.
            assert remote._core.direct is None
            assert remote._core.shared.region is None

            async def echo(msg):  # type: ignore[no-untyped-def]
                return msg.data

            await local.serve("svc.echo", echo)
            await local.flush()
            big = bytes(range(256)) * 4096  # 1 MiB: above the pool's threshold
            assert (await remote.request("svc.echo", big, timeout=10)).data == big
    finally:
        await node.stop()


async def test_a_transport_plugged_in_by_scheme_gets_what_the_node_offers(node):
    """A URL the SDK knows nothing about: the dialer registered for its scheme opens the
    link (here onto the node's Unix socket), and shared memory and direct requests come
    from the node's WELCOME for that link."""
    dialled: list[str] = []

    async def opener(url, handler):  # type: ignore[no-untyped-def]
        dialled.append(url)
        return await open_unix_link(node.socket, DEFAULT_MAX_PAYLOAD, handler)

    register_scheme("plugged://", opener)
    try:
        async with (
            connect("server", "plugged://n1") as server,
            connect("client", "plugged://n1") as client,
        ):
            assert dialled == ["plugged://n1", "plugged://n1"]
            assert client._core.conn.caps == Capabilities(shared_memory=True, direct=True)

            async def echo(msg):  # type: ignore[no-untyped-def]
                return msg.data

            await server.serve("svc.echo", echo)
            await server.flush()
            sub = await server.subscribe("big.>")
            payload = b"x" * (1 << 20)
            await client.publish("big.one", payload)
            got = await sub.next(timeout=10)
            assert got.shared and bytes(got.data) == payload
            got.release()

            async def frames_in() -> int:
                return int((await client.node_status())["stats"]["frames_in"])

            assert (await client.request("svc.echo", b"warm-up", timeout=5)).data == b"warm-up"
            before = await frames_in()
            for i in range(20):
                assert (await client.request("svc.echo", b"%d" % i, timeout=5)).data == b"%d" % i
            # Direct: only the two $node.stats calls crossed the node.
            assert await frames_in() - before <= 4
    finally:
        register_scheme("plugged://", None)

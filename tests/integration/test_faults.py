"""What must hold when things break: restarts, kills, hostile frames."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct

import msgpack
import pytest
from procs import raw_frame, read_raw_frame, start_node, until

from fabric.wire import Header, Kind, encode_header
from sdk import ConnectionLost, NoResponders, connect

pytestmark = [pytest.mark.timeout(120), pytest.mark.faults]


async def test_node_restart_agents_reconnect_and_resubscribe(tmp_path, fabric_env):
    sock = tmp_path / "node.sock"
    node = await start_node(sock, fabric_env, name="n1")
    try:
        async with connect("server", node.url) as server, connect("client", node.url) as client:

            async def echo(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await server.serve("svc.echo", echo)
            await server.flush()
            assert bytes((await client.request("svc.echo", b"before")).data) == b"before"

            # A request in flight when the node dies ends in ConnectionLost, not a hang.
            slow = asyncio.ensure_future(client.request("svc.never", b"", timeout=30))
            await asyncio.sleep(0)
            node.kill(signal.SIGKILL)
            await node.process.wait()
            with pytest.raises((ConnectionLost, NoResponders)):
                await asyncio.wait_for(slow, 20)

            node = await start_node(sock, fabric_env, name="n1")

            async def restored() -> bool:
                return server.reconnects >= 1 and client.reconnects >= 1

            await until(restored, what="both agents to reconnect")
            await server.flush()
            reply = await client.request("svc.echo", b"after", timeout=10)
            assert bytes(reply.data) == b"after", "the handler's subscription came back by itself"
    finally:
        await node.stop()


async def test_killed_agent_interest_is_dropped(node, agent_procs):
    echo = await agent_procs("echo", node.url)
    async with connect("client", node.url) as client:
        assert (await client.request("svc.who", b"", timeout=5)).text() == "echo-1"
        echo.kill(signal.SIGKILL)
        await echo.process.wait()

        async def gone() -> bool:
            try:
                await client.request("svc.who", b"", timeout=5)
            except NoResponders:
                return True
            return False

        await until(gone, what="the dead agent's subscription to be dropped")


def _raw_connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


async def test_malformed_frames_get_errors_and_others_are_unaffected(node, agent_procs):
    await agent_procs("echo", node.url)
    async with connect("client", node.url) as client:
        hostile = await asyncio.to_thread(_raw_connect, str(node.socket))
        try:
            hello = encode_header(Header(Kind.HELLO, msg_id=1))
            await asyncio.to_thread(
                hostile.sendall, raw_frame(hello, msgpack.packb({"name": "hostile", "labels": {}}))
            )
            welcome, _ = await asyncio.to_thread(read_raw_frame, hostile)
            assert msgpack.unpackb(welcome)[1] == Kind.WELCOME
            for garbage in (
                b"\xc1",  # never-used msgpack byte
                msgpack.packb([99, 5]),  # future protocol version
                msgpack.packb((1, 5, 7, "", 0, 0, "", None, 0, "", 0, 0, 0)),  # int subject
                encode_header(Header(Kind.PUB, subject="bad..subject")),
                encode_header(Header(Kind.SUB, subject="a.>.b", sid=3)),
            ):
                await asyncio.to_thread(hostile.sendall, raw_frame(garbage))
                header, payload = await asyncio.to_thread(read_raw_frame, hostile)
                assert msgpack.unpackb(header)[1] == Kind.ERR
                code, message = msgpack.unpackb(payload)
                assert code in ("remote_protocol_error", "invalid_subject"), message
            # The well-behaved agent never noticed.
            assert (await client.request("svc.echo", b"still fine", timeout=5)).text() == (
                "still fine"
            )
            # A frame that breaks framing itself (header length 0) closes only that link.
            await asyncio.to_thread(hostile.sendall, struct.pack("<II", 0, 0))
            closed = await asyncio.to_thread(hostile.recv, 1)
            assert closed == b""
            assert (await client.request("svc.echo", b"again", timeout=5)).text() == "again"
            status = await client.node_status()
            assert status["stats"]["malformed"] >= 6
        finally:
            hostile.close()


async def test_frames_before_hello_are_refused(node):
    sock = await asyncio.to_thread(_raw_connect, str(node.socket))
    try:
        pub = encode_header(Header(Kind.PUB, subject="x.y"))
        await asyncio.to_thread(sock.sendall, raw_frame(pub, b"data"))
        header, payload = await asyncio.to_thread(read_raw_frame, sock)
        assert msgpack.unpackb(header)[1] == Kind.ERR
        assert msgpack.unpackb(payload)[0] == "connection_lost"
    finally:
        sock.close()


async def test_agent_over_zeromq_tcp(tmp_path, fabric_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = await start_node(
        tmp_path / "n.sock",
        fabric_env,
        name="tcp-node",
        extra=["--listen", f"tcp://127.0.0.1:{port}"],
    )
    try:
        assert f"tcp://127.0.0.1:{port}" in node.lines[0]
        async with (
            connect("local", node.url) as local,
            connect("remote", f"tcp://127.0.0.1:{port}") as remote,
        ):

            async def echo(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await local.serve("svc.echo", echo)
            await local.flush()
            reply = await remote.request("svc.echo", b"over tcp", timeout=10)
            assert bytes(reply.data) == b"over tcp"
            chunks = []
            sub = await remote.subscribe("events.>")
            await remote.flush()
            await local.publish("events.a", b"1")
            chunks.append(bytes((await sub.next(timeout=10)).data))
            assert chunks == [b"1"]
    finally:
        await node.stop()


async def test_zeromq_agent_recovers_from_node_restart(tmp_path, fabric_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    extra = ["--listen", f"tcp://127.0.0.1:{port}", "--heartbeat-interval", "0.5"]
    node = await start_node(tmp_path / "n.sock", fabric_env, name="z", extra=extra)
    try:
        async with connect("remote", f"tcp://127.0.0.1:{port}") as remote:
            sub = await remote.subscribe("events.>")
            await remote.flush()
            node.kill(signal.SIGKILL)
            await node.process.wait()
            node = await start_node(tmp_path / "n.sock", fabric_env, name="z", extra=extra)

            async def back() -> bool:
                return remote.reconnects >= 1

            await until(back, what="the tcp agent to notice and reconnect")
            await remote.flush()
            async with connect("local", node.url) as local:
                await local.publish("events.b", b"2")
                assert bytes((await sub.next(timeout=10)).data) == b"2"
    finally:
        await node.stop()

"""Bounded memory under hostile input (issue 15, finding 4): what a client that declares large
frames and stalls can make a node hold, and ``max_payload`` on the TCP listener."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.asyncio
from procs import NodeProcess, raw_frame, read_raw_frame, start_node

from fabric.errors import PayloadTooLarge, RemoteProtocolError
from fabric.framing import FrameDecoder, PendingBudget, frame_prefix
from fabric.wire import Header, Kind, decode_header, encode_header
from sdk import connect

pytestmark = [pytest.mark.timeout(120), pytest.mark.faults]

MiB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of a process, bytes (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def hello(name: str) -> bytes:
    return raw_frame(encode_header(Header(Kind.HELLO, msg_id=1)), msgpack.packb({"name": name}))


def stall(sock: socket.socket, declared: int, send: int) -> bool:
    """Declare a frame of ``declared`` payload bytes, send ``send`` of them, then stop.
    Returns False when the node closed the connection before we were done."""
    header = encode_header(Header(Kind.PUB, subject="x.y"))
    try:
        sock.sendall(frame_prefix(len(header), declared) + header)
        chunk = b"\0" * MiB
        for _ in range(send // MiB):
            sock.sendall(chunk)
    except OSError:
        return False
    return True


def closed_by_node(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


async def test_before_the_handshake_a_connection_holds_almost_nothing(node: NodeProcess) -> None:
    async with connect("probe", node.url) as probe:
        await probe.node_status()
    base = rss(node.pid)
    socks = []
    try:
        for _ in range(6):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(node.socket))
            socks.append(s)
        done = await asyncio.gather(
            *(asyncio.to_thread(stall, s, 60 * MiB, 32 * MiB) for s in socks)
        )
        closed = await asyncio.gather(*(asyncio.to_thread(closed_by_node, s, 10) for s in socks))
        assert all(closed), "the node must close a connection that declares a big frame first"
        assert not any(done), "the node read 32 MiB from a peer that never said HELLO"
        grown = rss(node.pid) - base
        print(f"node RSS {base / MiB:.0f} MiB at rest, +{grown / MiB:.1f} MiB after 6 attempts")
        assert grown < 16 * MiB
    finally:
        for s in socks:
            s.close()
    async with connect("probe", node.url) as probe:
        assert (await probe.node_status())["stats"]["malformed"] >= 6


async def test_the_plain_tcp_cluster_port_holds_almost_nothing_before_a_peer_hello(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    with socket.socket() as probe_sock:
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]
    env = dict(fabric_env, FABRIC_CLUSTER=f"tcp://127.0.0.1:{port}")
    node = await start_node(tmp_path / "n.sock", env)
    socks = []
    try:
        async with connect("probe", node.url) as probe:
            await probe.node_status()
        base = rss(node.pid)
        for _ in range(6):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        done = await asyncio.gather(
            *(asyncio.to_thread(stall, s, 60 * MiB, 32 * MiB) for s in socks)
        )
        closed = await asyncio.gather(*(asyncio.to_thread(closed_by_node, s, 10) for s in socks))
        assert all(closed) and not any(done)
        grown = rss(node.pid) - base
        print(f"cluster port: node RSS +{grown / MiB:.1f} MiB after 6 attempts")
        assert grown < 16 * MiB
    finally:
        for s in socks:
            s.close()
        await node.stop()


async def test_stalled_partial_frames_are_capped_time_out_and_give_memory_back(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    env = dict(fabric_env, FABRIC_FRAME_STALL_TIMEOUT="1.5", FABRIC_MAX_PENDING_BYTES=str(64 * MiB))
    node = await start_node(tmp_path / "n.sock", env)
    socks: list[socket.socket] = []
    try:
        async with connect("probe", node.url) as probe:
            await probe.node_status()
        base = rss(node.pid)
        for i in range(6):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(node.socket))
            s.sendall(hello(f"staller{i}"))
            header, _ = await asyncio.to_thread(read_raw_frame, s)
            assert decode_header(header).kind is Kind.WELCOME
            socks.append(s)
        # Each declares 60 MiB and sends 24: two fit under the node's 64 MiB budget.
        await asyncio.gather(*(asyncio.to_thread(stall, s, 60 * MiB, 24 * MiB) for s in socks))
        peak = rss(node.pid) - base
        print(f"node RSS {base / MiB:.0f} MiB at rest, +{peak / MiB:.0f} MiB with frames stalled")
        assert peak < 64 * MiB + 32 * MiB, f"node grew by {peak / MiB:.0f} MiB"
        # Every stalled connection is closed within the stall timeout (twice, at worst).
        closed = await asyncio.gather(*(asyncio.to_thread(closed_by_node, s, 15) for s in socks))
        assert all(closed)
        async with connect("probe", node.url) as probe:
            status = await probe.node_status()
            assert not [s for s in status["sessions"] if s["name"].startswith("staller")]
            # And the node still serves.
            await probe.serve("svc.echo", lambda m: bytes(m.data))
            assert (await probe.request("svc.echo", b"ok", timeout=5)).text() == "ok"
        after = rss(node.pid) - base
        print(f"+{after / MiB:.0f} MiB after the stalled connections were closed")
        assert after < 24 * MiB, f"{after / MiB:.0f} MiB still held after the close"
    finally:
        for s in socks:
            s.close()
        await node.stop()


async def test_the_tcp_listener_enforces_max_payload(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    with socket.socket() as probe_sock:
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]
    node = await start_node(
        tmp_path / "n.sock",
        fabric_env,
        extra=["--listen", f"tcp://127.0.0.1:{port}", "--max-payload", str(MiB)],
    )
    ctx = zmq.asyncio.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        async with connect("watcher", node.url) as watcher:
            sub = await watcher.subscribe("big.>")
            dealer.connect(f"tcp://127.0.0.1:{port}")
            await dealer.send_multipart([encode_header(Header(Kind.HELLO, msg_id=1)),
                                         msgpack.packb({"name": "raw"})])
            header, _ = await asyncio.wait_for(dealer.recv_multipart(), 10)
            assert decode_header(header).kind is Kind.WELCOME
            # Just over the limit: the node answers each with a typed error.
            for i in range(4):
                pub = Header(Kind.PUB, subject="big.over", msg_id=10 + i)
                await dealer.send_multipart([encode_header(pub), b"\1" * (MiB + 1024)])
            await dealer.send_multipart([encode_header(Header(Kind.PING, msg_id=99)), b""])
            errors = []
            while True:
                header, payload = await asyncio.wait_for(dealer.recv_multipart(), 10)
                h = decode_header(header)
                if h.kind is Kind.PONG:
                    break
                assert h.kind is Kind.ERR
                errors.append(msgpack.unpackb(payload)[0])
            assert errors == ["payload_too_large"] * 4
            # Far over it (8 MiB): ZeroMQ refuses it before the node buffers it whole.
            for i in range(4):
                pub = Header(Kind.PUB, subject="big.huge", msg_id=20 + i)
                await dealer.send_multipart([encode_header(pub), b"\2" * (8 * MiB)])
            after = Header(Kind.PUB, subject="big.after")
            await dealer.send_multipart([encode_header(after), b""])
            with contextlib.suppress(Exception):
                await sub.next(timeout=5)  # big.after, if the link came back; nothing else
            await watcher.flush()
            assert not [m for m in sub._pending if m.subject != "big.after"]
            assert sub.delivered <= 1
            await watcher.serve("svc.echo", lambda m: bytes(m.data))
            assert (await watcher.request("svc.echo", b"alive", timeout=5)).text() == "alive"
    finally:
        dealer.close(linger=0)
        ctx.term()
        await node.stop()


def test_decoder_grows_with_arrived_bytes_and_charges_the_budget() -> None:
    budget = PendingBudget(10 * MiB)
    a, b = FrameDecoder(64 * MiB, budget), FrameDecoder(64 * MiB, budget)
    header = encode_header(Header(Kind.PUB, subject="x"))
    assert a.feed(frame_prefix(len(header), 60 * MiB) + header + b"\0" * 1000) == []
    assert a.buffered < 2000 and budget.used == a.buffered
    b.feed(frame_prefix(len(header), 60 * MiB) + header)
    with pytest.raises(RemoteProtocolError):
        b.feed(b"\0" * (10 * MiB))
    b.reset()
    a.reset()
    assert budget.used == 0 and a.buffered == 0
    small = FrameDecoder(64 * 1024)
    with pytest.raises(PayloadTooLarge):
        small.feed(frame_prefix(len(header), 65 * 1024))
    small.set_max_payload(MiB)
    small.reset()
    assert small.feed(frame_prefix(len(header), 65 * 1024) + header + b"\0" * (65 * 1024))

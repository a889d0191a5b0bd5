"""Zero-copy shared memory between agent processes on one host, through a real node."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket

import msgpack
import pytest
from procs import raw_frame, read_raw_frame, start_node, until

from fabric.shm import DESCRIPTOR_SIZE, Descriptor
from fabric.wire import Flags, Header, Kind, encode_header
from sdk import PayloadTooLarge, connect

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


def _our_shm_entries() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if "fabric" in name}


async def _pool(agent) -> dict:  # type: ignore[no-untyped-def]
    return (await agent.node_status())["pool"]


async def test_large_payload_fans_out_to_local_agents_written_once(node, agent_procs):
    before = _our_shm_entries()
    readers = [await agent_procs("big-reader", node.url, f"r{i}", "tensors.>") for i in range(4)]
    payload = os.urandom(16 * MiB)
    digest = hashlib.sha256(payload).hexdigest()
    async with connect("producer", node.url) as producer:
        for round_ in range(3):
            await producer.publish("tensors.weights", payload)
            for reader in readers:
                line = await reader.wait_line("read")
                assert line == f"read {digest} True {16 * MiB}", f"round {round_}: {line}"

        async def all_released() -> bool:
            pool = await _pool(producer)
            return bool(pool["leases"] == 0 and pool["allocated"] == 0)

        await until(all_released, what="every reader to release its slot")
        pool = await _pool(producer)
        assert pool["bytes_in_use"] == 0
    assert _our_shm_entries() == before, "memfd segments never appear in /dev/shm"


async def test_small_payloads_stay_inline(node):
    async with connect("a", node.url) as a, connect("b", node.url) as b:
        sub = await b.subscribe("small")
        await b.flush()
        await a.publish("small", b"x" * 1000)
        msg = await sub.next(timeout=5)
        assert not msg.shared and bytes(msg.data) == b"x" * 1000


async def test_shared_views_are_read_only_and_zero_copy(node):
    np = pytest.importorskip("numpy")
    async with connect("a", node.url) as a, connect("b", node.url) as b:
        sub = await b.subscribe("arrays")
        await b.flush()
        array = np.arange(1 << 20, dtype=np.float32)  # 4 MiB
        await a.publish("arrays", array)
        with await sub.next(timeout=5) as msg:
            assert msg.shared and msg.data.readonly
            received = np.frombuffer(msg.data, dtype=np.float32)
            assert np.array_equal(received, array)
            with pytest.raises(ValueError):
                received[0] = 1.0  # read-only pages: a receiver cannot scribble on others
            del received


async def test_killed_receiver_slots_are_reclaimed(node, agent_procs):
    hoarder = await agent_procs("big-reader", node.url, "hoarder", "blobs", "hold")
    async with connect("producer", node.url) as producer:
        for _ in range(3):
            await producer.publish("blobs", b"\x07" * (2 * MiB))
            await hoarder.wait_line("read")
        pool = await _pool(producer)
        assert pool["leases"] == 3, "the hoarder still holds every slot it was given"
        hoarder.kill(signal.SIGKILL)
        await hoarder.process.wait()

        async def reclaimed() -> bool:
            p = await _pool(producer)
            return bool(p["leases"] == 0 and p["reclaimed"] >= 3)

        await until(reclaimed, what="the dead receiver's slots to come back")


async def test_requests_and_replies_carry_large_payloads(node):
    async with connect("client", node.url) as client, connect("server", node.url) as server:

        async def reverse(msg):  # type: ignore[no-untyped-def]
            return bytes(msg.data)[::-1]

        await server.serve("svc.reverse", reverse)
        await server.flush()
        payload = os.urandom(3 * MiB)
        reply = await client.request("svc.reverse", payload, timeout=10)
        assert reply.shared and bytes(reply.data) == payload[::-1]
        reply.release()


async def test_remote_agents_get_bytes_for_a_shared_publish(tmp_path, fabric_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = await start_node(
        tmp_path / "n.sock", fabric_env, extra=["--listen", f"tcp://127.0.0.1:{port}"]
    )
    try:
        async with (
            connect("local", node.url) as local,
            connect("remote", f"tcp://127.0.0.1:{port}") as remote,
        ):
            sub = await remote.subscribe("big")
            await remote.flush()
            payload = os.urandom(MiB)
            await local.publish("big", payload)
            msg = await sub.next(timeout=10)
            assert not msg.shared and bytes(msg.data) == payload
    finally:
        await node.stop()


async def test_hostile_descriptors_are_refused_and_the_node_keeps_serving(node):
    async with connect("victim", node.url) as victim, connect("server", node.url) as server:
        sub = await victim.subscribe("target")

        async def echo(msg):  # type: ignore[no-untyped-def]
            return b"ok"

        await server.serve("svc.ok", echo)
        await victim.flush()
        await server.flush()
        good = Descriptor(segment=0, slot=0, offset=0, length=100, generation=1)
        forged = [
            good.encode(),  # never allocated to the sender
            Descriptor(segment=9, slot=0, offset=0, length=100, generation=1).encode(),
            Descriptor(segment=0, slot=10**6, offset=0, length=100, generation=1).encode(),
            Descriptor(segment=0, slot=0, offset=2**63, length=2**63, generation=1).encode(),
            Descriptor(segment=0, slot=0, offset=0, length=100, generation=2**40).encode(),
            b"\x00" * DESCRIPTOR_SIZE,
            b"short",
        ]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        await asyncio.to_thread(sock.connect, str(node.socket))
        try:
            hello = encode_header(Header(Kind.HELLO, msg_id=1))
            await asyncio.to_thread(
                sock.sendall, raw_frame(hello, msgpack.packb({"name": "forger", "labels": {}}))
            )
            await asyncio.to_thread(read_raw_frame, sock)
            for raw in forged:
                pub = encode_header(Header(Kind.PUB, subject="target", flags=Flags.SHM))
                await asyncio.to_thread(sock.sendall, raw_frame(pub, raw))
                header, payload = await asyncio.to_thread(read_raw_frame, sock)
                assert msgpack.unpackb(header)[1] == Kind.ERR
                assert msgpack.unpackb(payload)[0] == "bad_descriptor"
            assert (await server.request("svc.ok", b"", timeout=5)).text() == "ok"
            with pytest.raises(Exception, match="no message"):
                await sub.next(timeout=0.3)  # nothing forged was delivered
        finally:
            sock.close()


async def test_the_payload_limit_holds_on_the_shared_memory_path(tmp_path, fabric_env):
    node = await start_node(tmp_path / "n.sock", fabric_env, extra=["--max-payload", str(MiB)])
    try:
        async with connect("a", node.url) as a, connect("b", node.url) as b:
            sub = await b.subscribe("big")
            await b.flush()
            with pytest.raises(PayloadTooLarge):
                await a.publish("big", b"\x01" * (MiB + 1))
            await a.publish("big", b"\x02" * MiB)  # at the limit: fine, through a slot
            msg = await sub.next(timeout=10)
            assert msg.shared and len(msg.data) == MiB
    finally:
        await node.stop()

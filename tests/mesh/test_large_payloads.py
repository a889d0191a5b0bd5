"""Large payloads across two real nodes over the TCP peer link, shared memory off so every
byte crosses the sockets: agent -> node (Unix) -> node (TCP) -> agent, and back. The payload a
node or agent reads into its own buffer (fabric/protocol/_framing.py) is handed on as a view:
these check that content survives and that a view kept by the application is not overwritten
by the frames that come after it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

import pytest

from sdk import Msg, connect

from .conftest import MeshNodes, cloud_toml, free_port

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024


async def two_nodes(m: MeshNodes) -> None:
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    toml = {n: cloud_toml(n, m.cluster, "shm = false\n") for n in m.cluster}
    await asyncio.gather(*(m.start(n, t) for n, t in toml.items()))
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})


@pytest.mark.parametrize("size", [MiB, 8 * MiB])
async def test_request_reply_carries_large_payloads_intact(
    mesh_nodes: MeshNodes, size: int
) -> None:
    m = mesh_nodes
    await two_nodes(m)
    async with contextlib.AsyncExitStack() as stack:
        asker = await stack.enter_async_context(connect("asker", m.url("c1")))
        echo = await stack.enter_async_context(connect("echo", m.url("c2")))
        seen: list[str] = []

        async def reverse(msg: Msg) -> bytes:
            data = bytes(msg.data)
            seen.append(hashlib.sha256(data).hexdigest())
            return data[::-1]

        await echo.serve("svc.reverse", reverse)
        await echo.flush(timeout=60)
        await m.wait_interest("c1", "svc.reverse")
        for round_ in range(3):
            payload = os.urandom(size)
            reply = await asker.request("svc.reverse", payload, timeout=60)
            assert len(reply.data) == size, round_
            assert bytes(reply.data) == payload[::-1], round_
            assert seen[-1] == hashlib.sha256(payload).hexdigest()


async def test_kept_payload_views_stay_valid_after_later_frames(mesh_nodes: MeshNodes) -> None:
    """A subscriber keeps every message (and so every payload view) while large and small
    frames keep arriving behind them; each is checked only at the end."""
    m = mesh_nodes
    await two_nodes(m)
    async with contextlib.AsyncExitStack() as stack:
        pub = await stack.enter_async_context(connect("pub", m.url("c1")))
        subscriber = await stack.enter_async_context(connect("subscriber", m.url("c2")))
        sub = await subscriber.subscribe("blobs.>")
        await subscriber.flush(timeout=60)
        await m.wait_interest("c1", "blobs.>")
        sizes = [MiB, 5, 8 * MiB, MiB + 1, 64 * 1024, 64 * 1024 - 1, 3, 2 * MiB - 7]
        sent = [os.urandom(n) for n in sizes]
        for i, data in enumerate(sent):
            await pub.publish(f"blobs.{i}", data)
        await pub.flush(timeout=60)
        kept = [await sub.next(timeout=60) for _ in sent]
        # Another round on top, reusing whatever buffers the receivers have.
        for i, data in enumerate(sent):
            await pub.publish(f"blobs.again.{i}", data[::-1])
        again = [await sub.next(timeout=60) for _ in sent]
        for i, data in enumerate(sent):
            assert kept[i].subject == f"blobs.{i}"
            assert bytes(kept[i].data) == data, i
            assert bytes(again[i].data) == data[::-1], i

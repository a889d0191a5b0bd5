"""Baseline: NATS through nats-py, against a ``nats-server`` the bench starts itself.

The server listens on a free loopback port (never the shared one on 4222), with
``max_payload`` raised to 64 MiB so the 16 MiB bigfan payload is allowed (its default is
1 MiB). Fan-out and streaming use one multiplexed reply inbox (``_INBOX.<id>.*``) subscribed
once, as nats-py's own ``request`` does, so no operation pays for a SUB/UNSUB.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._payloads import FAN_REPLY, big_ok, map_result, parse_stream_request
from bench._plan import ProcPlan
from bench._procs import Child, start_child
from bench.systems._base import Announce, Client, System, WorkerInfo
from fabric.errors import Timeout

__all__ = ["NatsSystem"]

_OP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback TCP port free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsSystem(System):
    name = "nats"
    label = "NATS (nats-py)"
    hint = "pip install nats-py, and install nats-server (apt install nats-server)"
    modules = ("nats",)
    binaries = ("nats-server",)
    packages = ("nats-py",)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._server: Child | None = None

    async def start_env(self, workdir: Path) -> dict[str, Any]:
        port = free_port()
        conf = workdir / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{port}\n"
            "max_payload: 67108864\n"
            "max_pending: 268435456\n"
            'write_deadline: "10s"\n'
        )
        binary = shutil.which("nats-server") or "nats-server"
        self._server = await start_child(
            "nats-server", [binary, "-c", str(conf)], ready="Server is ready", ready_on="stderr"
        )
        return {"url": f"nats://127.0.0.1:{port}"}

    async def stop_env(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def serve(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: asyncio.Event
    ) -> None:
        import nats

        conns: list[Any] = []
        try:
            for agent in plan.agents:
                nc = await nats.connect(env["url"], name=agent.name, max_reconnect_attempts=0)
                conns.append(nc)
                await _subscribe_roles(nc, agent.roles)
                await nc.flush()  # the server holds every subscription before we say ready
            announce({})
            await stop.wait()
        finally:
            for nc in conns:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        import nats

        nc = await nats.connect(env["url"], name="bench-client", max_reconnect_attempts=0)
        client = _NatsClient(nc, layout)
        await client.start()
        return client


async def _subscribe_roles(nc: Any, roles: Sequence[str]) -> None:
    if "echo" in roles:

        async def echo(msg: Any) -> None:
            await nc.publish(msg.reply, msg.data)

        await nc.subscribe("bench.echo", cb=echo)
    if "fan" in roles:

        async def fan(msg: Any) -> None:
            await nc.publish(msg.reply, FAN_REPLY)

        await nc.subscribe("bench.fan", cb=fan)
    if "map" in roles:

        async def map_(msg: Any) -> None:
            await nc.publish(msg.reply, map_result(msg.data))

        await nc.subscribe("bench.map", queue="map", cb=map_)
    if "big" in roles:

        async def big(msg: Any) -> None:
            await nc.publish(msg.reply, big_ok(msg.data))

        await nc.subscribe("bench.big", cb=big)
    if "stream" in roles:

        async def stream(msg: Any) -> None:
            chunks, size = parse_stream_request(msg.data)
            chunk = b"x" * size
            for _ in range(chunks):
                await nc.publish(msg.reply, chunk)
            await nc.publish(msg.reply, b"")  # end of stream

        await nc.subscribe("bench.stream", cb=stream)
    if "sink" in roles:
        counted = [0]
        reached = asyncio.Event()
        target = [0]

        async def sink(msg: Any) -> None:
            counted[0] += 1
            if target[0] and counted[0] >= target[0]:
                reached.set()

        async def end(msg: Any) -> None:
            target[0] = int(msg.data)
            if counted[0] >= target[0]:
                reached.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reached.wait(), _OP_TIMEOUT_S)
            await nc.publish(msg.reply, str(counted[0]).encode())
            counted[0], target[0] = 0, 0
            reached.clear()

        await nc.subscribe("bench.tp", cb=sink, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.subscribe("bench.tp.end", cb=end)


class _Collector:
    """Replies gathered on one token of the multiplexed inbox."""

    __slots__ = ("done", "expected", "received", "replies")

    def __init__(self, expected: int, done: asyncio.Future[None]) -> None:
        self.expected = expected
        self.done = done
        self.replies: list[bytes] = []
        self.received = 0


class _NatsClient(Client):
    def __init__(self, nc: Any, layout: Sequence[ProcPlan]) -> None:
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        self._pending: dict[str, _Collector] = {}
        self._fans = sum(1 for p in layout for a in p.agents if "fan" in a.roles)
        self._bigs = sum(1 for p in layout for a in p.agents if "big" in a.roles)

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        await self._nc.flush()

    async def _on_reply(self, msg: Any) -> None:
        collector = self._pending.get(msg.subject.rpartition(".")[2])
        if collector is None:
            return
        data = msg.data
        if collector.expected < 0:  # a stream: count bytes until the empty end marker
            if not data:
                collector.done.set_result(None)
            else:
                collector.received += len(data)
            return
        collector.replies.append(data)
        if len(collector.replies) >= collector.expected and not collector.done.done():
            collector.done.set_result(None)

    async def _scatter(self, subject: str, payload: bytes, expected: int) -> _Collector:
        token = str(next(self._tokens))
        collector = _Collector(expected, asyncio.get_running_loop().create_future())
        self._pending[token] = collector
        try:
            await self._nc.publish(subject, payload, reply=f"{self._inbox}.{token}")
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await collector.done
        except TimeoutError:
            raise Timeout("no complete answer in time", subject=subject) from None
        finally:
            del self._pending[token]
        return collector

    async def request(self, payload: bytes) -> int:
        msg = await self._nc.request("bench.echo", payload, timeout=_OP_TIMEOUT_S)
        return len(msg.data)

    async def fanout(self, payload: bytes) -> int:
        got = await self._scatter("bench.fan", payload, self._fans)
        return sum(1 for r in got.replies if r == FAN_REPLY)

    async def map(self, tasks: Sequence[bytes], concurrency: int) -> list[bytes]:
        results: list[bytes] = [b""] * len(tasks)
        next_index = 0

        async def lane() -> None:
            nonlocal next_index
            while next_index < len(tasks):
                i = next_index
                next_index += 1
                msg = await self._nc.request("bench.map", tasks[i], timeout=_OP_TIMEOUT_S)
                results[i] = msg.data

        await asyncio.gather(*(lane() for _ in range(min(concurrency, len(tasks)))))
        return results

    async def bigfan(self, payload: bytes) -> int:
        got = await self._scatter("bench.big", payload, self._bigs)
        expected = b"ok:" + str(len(payload)).encode()
        return sum(1 for r in got.replies if r == expected)

    async def stream(self, chunks: int, size: int) -> int:
        got = await self._scatter("bench.stream", f"{chunks}:{size}".encode(), -1)
        return got.received

    async def throughput(self, count: int, size: int, budget_s: float) -> tuple[int, float]:
        payload = b"m" * size
        publish = self._nc.publish
        start = time.perf_counter()
        deadline = start + budget_s
        sent = 0
        while sent < count:
            await publish("bench.tp", payload)
            sent += 1
            if sent % 1024 == 0 and time.perf_counter() >= deadline:
                break
        await self._nc.flush()
        reply = await self._nc.request("bench.tp.end", str(sent).encode(), timeout=_OP_TIMEOUT_S)
        return int(reply.data), time.perf_counter() - start

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.close(), 5)

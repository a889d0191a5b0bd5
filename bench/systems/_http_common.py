"""What both HTTP baselines share: addressing agents by port, and the client-side patterns.

An HTTP agent is one server on its own loopback port (an agent is addressed by URL, as REST
agents are). Fan-out is ``asyncio.gather`` of one POST per child; map keeps at most
``concurrency`` POSTs in flight, task ``i`` going to worker ``i % 8``; streaming is a chunked
response read as it arrives. HTTP has no one-way message, so ``throughput`` is n/a.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench._payloads import parse_stream_request
from bench._plan import ProcPlan, agents_with_role
from bench.systems._base import Client, WorkerInfo
from fabric.errors import ConfigError

__all__ = ["HttpClient", "agent_urls", "bind_loopback", "stream_body"]

#: Large enough for the 16 MiB bigfan payload, with room.
MAX_BODY = 64 * 1024 * 1024


def bind_loopback() -> socket.socket:
    """A listening TCP socket on a free loopback port (bound before the server starts, so
    the port can be announced without a race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def agent_urls(layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo], role: str) -> list[str]:
    """Base URLs of the agents playing ``role``.

    Raises:
        ConfigError: a worker did not announce the port of one of its agents.
    """
    ports: dict[str, int] = {}
    for info in infos:
        ports.update(info.get("ports", {}))
    urls = []
    for agent in agents_with_role(layout, role):
        if agent.name not in ports:
            raise ConfigError(f"worker announced no port for agent {agent.name}")
        urls.append(f"http://127.0.0.1:{ports[agent.name]}")
    return urls


async def stream_body(request_body: bytes) -> AsyncIterator[bytes]:
    """The chunks a streaming responder sends for ``request_body``."""
    chunks, size = parse_stream_request(request_body)
    chunk = b"x" * size
    for _ in range(chunks):
        yield chunk


class HttpClient(Client):
    """Patterns over two primitives the concrete client provides: POST and streamed GET."""

    def __init__(self, layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]) -> None:
        self.echo = _first(agent_urls(layout, infos, "echo"))
        self.fans = agent_urls(layout, infos, "fan")
        self.maps = agent_urls(layout, infos, "map")
        self.bigs = agent_urls(layout, infos, "big")
        self.streamer = _first(agent_urls(layout, infos, "stream"))

    async def post(self, url: str, body: bytes) -> bytes:
        raise NotImplementedError

    async def post_stream(self, url: str, body: bytes) -> int:
        """POST ``body`` and read the chunked reply as it comes; returns bytes received."""
        raise NotImplementedError

    async def request(self, payload: bytes) -> int:
        return len(await self.post(f"{self.echo}/echo", payload))

    async def fanout(self, payload: bytes) -> int:
        replies = await asyncio.gather(*(self.post(f"{u}/fan", payload) for u in self.fans))
        return sum(1 for r in replies if r == b"ok")

    async def map(self, tasks: Sequence[bytes], concurrency: int) -> list[bytes]:
        results: list[bytes] = [b""] * len(tasks)
        next_index = 0
        workers = self.maps

        async def lane() -> None:
            nonlocal next_index
            while next_index < len(tasks):
                i = next_index
                next_index += 1
                results[i] = await self.post(f"{workers[i % len(workers)]}/map", tasks[i])

        await asyncio.gather(*(lane() for _ in range(min(concurrency, len(tasks)))))
        return results

    async def bigfan(self, payload: bytes) -> int:
        expected = b"ok:" + str(len(payload)).encode()
        replies = await asyncio.gather(*(self.post(f"{u}/big", payload) for u in self.bigs))
        return sum(1 for r in replies if r == expected)

    async def stream(self, chunks: int, size: int) -> int:
        return await self.post_stream(f"{self.streamer}/stream", f"{chunks}:{size}".encode())

    def throughput(self, count: int, size: int, budget_s: float) -> Any:
        raise NotImplementedError("HTTP has no one-way messages (every POST waits for a reply)")


def _first(urls: list[str]) -> str:
    return urls[0] if urls else ""

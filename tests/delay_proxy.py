"""A TCP relay on loopback that holds every chunk for a fixed time in each direction (order
kept), run inside the test's event loop: a delayed link between two nodes without netem.

Also a partition switch: ``cut()`` drops every connection and refuses new ones until
``heal()``, the way a broken link looks to both ends (a reset, then silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class DelayProxy:
    """``listen`` on 127.0.0.1:<port> and relay to ``target`` (host, port) with ``delay`` s."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.cut_off = False
        self.connections = 0

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, chunk))
            queue.put_nowait((time.monotonic() + self.delay, b""))

        async def write() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(read(), write())
        except (ConnectionError, OSError):
            writer.close()

    def cut(self) -> None:
        """Partition: reset every relayed connection and refuse new ones."""
        self.cut_off = True
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()

    def heal(self) -> None:
        self.cut_off = False

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

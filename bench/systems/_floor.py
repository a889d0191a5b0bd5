"""Reference rows: the machine's floor for ``rr``, a socket ping-pong between two processes
(``bench.floor``) over a Unix socket and over TCP on loopback, with the same payloads."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench._plan import ProcPlan
from bench._procs import Child, start_child
from bench.floor import FloorConnection, connect_floor
from bench.systems._base import Client, System, WorkerInfo

__all__ = ["FloorTcpSystem", "FloorUnixSystem"]


class FloorUnixSystem(System):
    name = "floor-unix"
    label = "floor: socket ping-pong, Unix socket"
    reference = True
    only_scenarios = ("rr",)
    transport: ClassVar[str] = "unix"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._echo: Child | None = None

    async def start_env(self, workdir: Path) -> dict[str, Any]:
        argv = [sys.executable, "-m", "bench.floor", "serve", self.transport]
        if self.transport == "unix":
            argv.append(str(workdir / "floor.sock"))
        self._echo = await start_child(f"{self.name} echo", argv, ready="ready ")
        return {"address": self._echo.ready_line.split("ready ", 1)[1].strip()}

    async def stop_env(self) -> None:
        if self._echo is not None:
            await self._echo.stop()
            self._echo = None

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        return _FloorClient(await asyncio.to_thread(connect_floor, env["address"]))


class FloorTcpSystem(FloorUnixSystem):
    name = "floor-tcp"
    label = "floor: socket ping-pong, TCP loopback"
    transport = "tcp"


class _FloorClient(Client):
    """Blocking: the harness runs the loop in one thread, which blocks in ``recv``."""

    blocking = True

    def __init__(self, conn: FloorConnection) -> None:
        self._conn = conn

    def request(self, payload: bytes) -> int:
        return self._conn.request(payload)

    async def aclose(self) -> None:
        self._conn.close()

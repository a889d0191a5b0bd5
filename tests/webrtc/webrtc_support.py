"""Shared pieces of the WebRTC tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from procs import NodeProcess, Proc

ROOT = Path(__file__).resolve().parents[2]

AUTH_FILE = """
[agents.edge-1]
credential = "edge-secret"
publish = { allow = [">"] }
subscribe = { allow = [">"] }
"""


@dataclass
class Cloud:
    node: NodeProcess
    env: dict[str, str]
    tmp: Path
    gateway: str = ""
    auth_gateway: str = ""
    agents: dict[str, Proc] = field(default_factory=dict)


class Collector:
    """A LinkHandler that records frames and lets a test await them."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.frames.append((header, bytes(payload)))
        self._changed.set()

    def link_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.frames

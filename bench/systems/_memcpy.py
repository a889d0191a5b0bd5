"""Reference row: one plain memcpy of the bigfan payload, the physical limit of delivery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench._plan import ProcPlan
from bench.systems._base import Client, System, WorkerInfo

__all__ = ["MemcpySystem"]


class MemcpySystem(System):
    name = "memcpy"
    label = "memcpy of the payload (physical limit)"
    reference = True
    only_scenarios = ("bigfan",)

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        return _MemcpyClient()


class _MemcpyClient(Client):
    """Copies into a buffer allocated once (touched, so no page fault is measured)."""

    blocking = True

    def __init__(self) -> None:
        self._dst = bytearray()

    def bigfan(self, payload: bytes) -> int:
        from bench._plan import BIG_AGENTS

        if len(self._dst) != len(payload):
            self._dst = bytearray(len(payload))
        memoryview(self._dst)[:] = payload
        # One copy reaches every local reader of shared memory; report them all delivered.
        return BIG_AGENTS

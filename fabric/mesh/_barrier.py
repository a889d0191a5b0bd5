"""Mesh barriers: wait until every node reachable from here has processed what this node
sent it (``Mesh`` inherits ``Barriers``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ..errors import Timeout
from ..router import Strategy
from ..wire import Header, Kind, encode_header
from ._end import _End, _Peer

if TYPE_CHECKING:
    from ..config import NodeSettings

#: Barrier pings number from here up, so they never collide with heartbeat sequence numbers.
_BARRIER_BASE = 1 << 48


class Barriers:
    """Barrier pings to peers, their relaying and their answers."""

    # What barriers use of the Mesh they are part of.
    settings: NodeSettings
    strategy: Strategy
    _peers: dict[str, _Peer]
    _barriers: dict[int, tuple[str, asyncio.Future[None]]]
    _barrier_seq: int

    if TYPE_CHECKING:

        def flush(self) -> None: ...

    async def barrier(self, timeout: float, *, came_from: str | None = None) -> None:
        """Return once every node reachable from here has processed all this node sent it so
        far (interest changes included) and everything forwarded here before that arrived.

        Peer links are ordered, so a barrier PING sent after the interest changes is handled
        only after them. A peer answers it only once its own barrier towards the peers it
        passes that interest on to has returned (``_relay_barrier``), so the answer means
        every node the interest travels to has it: a leaf's handler is known in the whole
        cluster and at the other leaves. A peer that goes down meanwhile counts as done: it
        forwards nothing more. ``came_from`` is the peer whose barrier this one relays: it is
        not asked back, and only the peers its interest is exported to are asked.

        Raises:
            Timeout: a live peer did not answer within ``timeout`` seconds.
        """
        self.flush()
        loop = asyncio.get_running_loop()
        waits = []
        source = self._peers.get(came_from) if came_from is not None else None
        for name, peer in list(self._peers.items()):
            if came_from is not None and (
                name == came_from
                or source is None
                or not self.strategy.exports(source.kind, peer.kind)
            ):
                continue
            self._barrier_seq += 1
            fut: asyncio.Future[None] = loop.create_future()
            self._barriers[self._barrier_seq] = (name, fut)
            peer.end.send(encode_header(Header(Kind.PING, msg_id=self._barrier_seq)), b"")
            waits.append(fut)
        if not waits:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            raise Timeout("a peer did not answer the barrier in time") from None
        finally:
            for seq in [s for s, (_, f) in self._barriers.items() if f in waits]:
                del self._barriers[seq]

    async def _relay_barrier(self, end: _End, seq: int) -> None:
        """A peer's barrier PING: answer once our onward barrier returned (or not at all if it
        times out, so the asker's barrier times out too rather than lying)."""
        budget = max(1.0, 2 * self.settings.mesh_dead_after)
        with contextlib.suppress(Timeout):
            await self.barrier(budget, came_from=end.peer)
            end.send(encode_header(Header(Kind.PONG, msg_id=seq)), b"")

    def _barrier_answered(self, seq: int) -> bool:
        entry = self._barriers.get(seq)
        if entry is None:
            return False
        if not entry[1].done():
            entry[1].set_result(None)
        return True

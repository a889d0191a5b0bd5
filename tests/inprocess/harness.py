"""Whole nodes in one process: real ``Node``, ``Mesh`` and ``Router``, wired with in-memory
links and a manual clock (aioquic's test style). Nothing binds a socket; nothing sleeps.

Every frame sent goes into one FIFO (``Fabric.queue``); ``Fabric.pump`` delivers them in
order until nothing moves, so each test reads as a deterministic sequence of steps. The
clock only moves when a test calls ``Fabric.advance``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from typing_extensions import Buffer

from fabric.config import NodeSettings
from fabric.errors import ConnectionLost
from fabric.mesh import Mesh
from fabric.node import Node
from fabric.private import inbox_root
from fabric.transports import Link
from fabric.wire import Flags, Header, Kind, Status, decode_header, encode_header

__all__ = ["Agent", "Fabric", "Frame", "ManualClock", "MemoryLink"]


class ManualClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class MemoryLink(Link):
    """One end of an in-memory frame link; what it sends waits in the fabric's queue."""

    transport = "memory"

    def __init__(self, fabric: Fabric, name: str, route: tuple[str, str] | None = None) -> None:
        self._fabric = fabric
        self._name = name
        #: (from node, to node) of a peer link: a test mutes it to lose frames silently.
        self._route = route
        self.other: MemoryLink | None = None
        self._closed = False
        #: Bytes "not yet taken by the kernel": a test sets it to play a slow consumer.
        self.backlog = 0

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed or self.other is None:
            raise ConnectionLost(f"{self._name} is closed")
        if self._route in self._fabric.muted:
            return
        other = self.other
        frame = (bytes(header), bytes(payload))
        self._fabric.queue.append(lambda: other._receive(*frame))

    def _receive(self, header: bytes, payload: bytes) -> None:
        if not self._closed and self.handler is not None:
            self.handler.frame_received(header, memoryview(payload))

    def buffered(self) -> int:
        return self.backlog

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.handler is not None:
            self.handler.link_lost(None)
        other = self.other
        if other is not None:
            self._fabric.queue.append(other.close)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> str:
        return self._name


@dataclass(slots=True)
class Frame:
    """A frame an agent received."""

    header: Header
    payload: bytes


@dataclass(eq=False)
class Agent:
    """A minimal agent speaking the wire protocol over a ``MemoryLink`` (no SDK)."""

    fabric: Fabric
    name: str
    link: MemoryLink
    received: list[Frame] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.received.append(Frame(decode_header(header), bytes(payload)))

    def link_lost(self, exc: BaseException | None) -> None:
        return None

    @property
    def inbox(self) -> str:
        return inbox_root(self.name)

    def send(self, header: Header, payload: bytes = b"") -> None:
        self.link.send(encode_header(header), payload)

    def sub(self, subject: str, queue: str = "", sid: int | None = None) -> int:
        sid = next(self._ids) if sid is None else sid
        self.send(Header(Kind.SUB, subject=subject, sid=sid, queue=queue))
        return sid

    def unsub(self, sid: int) -> None:
        self.send(Header(Kind.UNSUB, sid=sid))

    def pub(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        reply: str = "",
        flags: int = 0,
        timeout_ms: int = 0,
        headers: dict[str, str] | None = None,
    ) -> int:
        msg_id = next(self._ids)
        self.send(
            Header(
                Kind.PUB,
                subject=subject,
                reply=reply,
                msg_id=msg_id,
                flags=flags,
                timeout_ms=timeout_ms,
                headers=headers,
            ),
            payload,
        )
        return msg_id

    def request(self, subject: str, payload: bytes = b"", **kw: Any) -> str:
        """A request; returns the reply subject to look for."""
        reply = f"{self.inbox}.{next(self._ids)}"
        self.pub(subject, payload, reply=reply, flags=Flags.NO_RESPONDERS, **kw)
        return reply

    def gather(self, subject: str, payload: bytes = b"", **kw: Any) -> str:
        reply = f"{self.inbox}.{next(self._ids)}"
        self.pub(subject, payload, reply=reply, flags=Flags.COUNT, **kw)
        return reply

    def control(self, subject: str, headers: dict[str, str] | None = None) -> None:
        self.send(Header(Kind.CONTROL, subject=subject, msg_id=next(self._ids), headers=headers))

    def take(self, kind: Kind | None = None) -> list[Frame]:
        """What arrived so far (of ``kind``), cleared."""
        got = [f for f in self.received if kind is None or f.header.kind is kind]
        self.received = [f for f in self.received if f not in got]
        return got

    def messages(self) -> list[Frame]:
        return self.take(Kind.MSG)

    def statuses(self) -> list[Frame]:
        return self.take(Kind.STATUS)

    def no_responders(self) -> int:
        return sum(1 for f in self.statuses() if f.header.status == Status.NO_RESPONDERS)


class Fabric:
    """Nodes, their peer links and agents, in memory, on one manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.queue: deque[Callable[[], None]] = deque()
        self.nodes: dict[str, Node] = {}
        self._cuts: dict[frozenset[str], Callable[[], None]] = {}
        #: (from, to) pairs whose frames are silently lost (a peer that stopped answering).
        self.muted: set[tuple[str, str]] = set()

    # -- building -----------------------------------------------------------------------

    def node(self, name: str, *, site: str = "", role: str = "cloud", **settings: Any) -> Node:
        cfg = NodeSettings(
            name=name,
            site=site or name,
            role=role,  # type: ignore[arg-type]  # a Literal in settings
            shm=False,
            mesh_heartbeat=1.0,
            mesh_dead_after=3.0,
            **settings,
        )
        node = Node(cfg, clock=self.clock)
        node.mesh = Mesh(node, cfg, None)
        self.nodes[name] = node
        return node

    def agent(self, node: str, name: str, labels: dict[str, str] | None = None) -> Agent:
        ours, theirs = MemoryLink(self, f"{name}@agent"), MemoryLink(self, f"{name}@{node}")
        ours.other, theirs.other = theirs, ours
        agent = Agent(self, name, ours)
        ours.handler = agent
        self.nodes[node].attach(theirs)
        hello = {"name": name, "labels": labels or {}}
        agent.send(Header(Kind.HELLO, msg_id=0), msgpack.packb(hello))
        agent.sub(f"{agent.inbox}.>")
        return agent

    def link(self, dialer: str, acceptor: str) -> None:
        """A peer link, ``dialer`` saying HELLO; frames move on ``pump``."""
        a, b = self._mesh(dialer), self._mesh(acceptor)
        ours = MemoryLink(self, f"{acceptor}@{dialer}", (dialer, acceptor))
        theirs = MemoryLink(self, f"{dialer}@{acceptor}", (acceptor, dialer))
        ours.other, theirs.other = theirs, ours
        b.attach(theirs, dialed=False)
        a.attach(ours, dialed=True)

        def cut() -> None:
            ours.close()
            theirs.close()

        self._cuts[frozenset((dialer, acceptor))] = cut

    def cut(self, a: str, b: str) -> None:
        """The link between ``a`` and ``b`` dies; both sides notice (as a TCP close)."""
        self._cuts.pop(frozenset((a, b)))()

    def _mesh(self, name: str) -> Mesh:
        mesh = self.nodes[name].mesh
        assert mesh is not None
        return mesh

    # -- running ------------------------------------------------------------------------

    async def pump(self, *, flush: bool = True, limit: int = 100_000) -> int:
        """Deliver frames until nothing moves; returns how many. ``flush``: interest
        announcements go out as they would at the end of each loop turn."""
        moved = 0
        while True:
            await asyncio.sleep(0)  # tasks the nodes started (migration steps) run here
            if flush:
                for node in self.nodes.values():
                    assert node.mesh is not None
                    node.mesh.flush()
            if not self.queue:
                await asyncio.sleep(0)
                if not self.queue:
                    return moved
            while self.queue:
                self.queue.popleft()()
                moved += 1
                assert moved < limit, "frames keep moving: a loop"

    def step(self) -> bool:
        """Deliver one frame; False when none was waiting."""
        if not self.queue:
            return False
        self.queue.popleft()()
        return True

    async def advance(self, seconds: float) -> None:
        """Move the clock; every node acts on what fell due, then frames move."""
        self.clock.now += seconds
        for node in self.nodes.values():
            node.tick()
        await self.pump()

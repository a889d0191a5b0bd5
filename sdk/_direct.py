"""Direct requests between agents on one host, with the node as the control plane.

Every process on a request's path costs two wake-ups (about 30 µs each across CPUs), so a
request that goes agent → node → agent and back pays four. Agents on the node's host
therefore also listen on a socket of their own; a requester asks the node once which local
agents serve a subject (``$node.resolve``: the directory, checked against its permissions),
caches the answer until the node says interest changed (``$dir.invalidate``), and sends its
requests straight to the responder, which answers on the same link: two wake-ups per round
trip. Anything the directory cannot vouch for (remote responders, other nodes, large payloads
that go through shared memory) keeps going through the node.

In latency mode the requester also spins on the link for a short budget before sleeping, so
the reply is picked up without a wake-up at all.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fabric.protocol import NODE_RESOLVE, ResolveRequest
from fabric.transports import StreamLink, open_unix_link

from ._remote_direct import GrantedDoor, open_tcp_link, present_grant, renew_at

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["DirectPaths", "DirectRoute"]

_MAX_PAYLOAD = 64 * 1024 * 1024


@dataclass(slots=True)
class DirectRoute:
    """Who serves one subject: every plain subscriber, and each queue group's members."""

    plain: list[tuple[str, int]] = field(default_factory=list)
    groups: list[list[tuple[str, int]]] = field(default_factory=list)
    #: The agent name behind each socket path, as the node's directory said.
    names: dict[str, str] = field(default_factory=dict)
    #: The grant to present for each ``tcp://`` target on another host (_remote_direct.py).
    grants: dict[str, str] = field(default_factory=dict)
    #: The node of each target on another host (local targets share the requester's node).
    nodes: dict[str, str] = field(default_factory=dict)
    #: Wall-clock second after which this route is resolved again, before its first grant
    #: runs out (0: it holds no grant and never runs out).
    renew_at: float = 0.0
    _cursor: int = 0

    @property
    def empty(self) -> bool:
        return not self.plain and not self.groups

    def pick(self) -> list[tuple[str, int]]:
        """Targets for one request: all plain subscribers, one member per group (rotating)."""
        if not self.groups:
            return self.plain
        self._cursor += 1
        return [*self.plain, *(g[self._cursor % len(g)] for g in self.groups)]

    @classmethod
    def from_wire(cls, targets: list[Any]) -> DirectRoute:
        route = cls()
        groups: dict[str, list[tuple[str, int]]] = {}
        for path, sid, group, *rest in targets:
            if rest:
                route.names[str(path)] = str(rest[0])
            if len(rest) > 1 and rest[1]:
                route.grants[str(path)] = str(rest[1])
            if len(rest) > 2 and rest[2]:
                route.nodes[str(path)] = str(rest[2])
            if group:
                groups.setdefault(str(group), []).append((str(path), int(sid)))
            else:
                route.plain.append((str(path), int(sid)))
        route.groups = [sorted(members) for _, members in sorted(groups.items())]
        if route.grants:
            route.renew_at = renew_at(route.grants.values(), time.time())
        return route


class _SameUserLink(StreamLink):
    """An inbound direct link that refuses peers running as another user."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            self.abort()


class _LinkEvents:
    """LinkHandler for one direct link: frames and loss go to the agent."""

    __slots__ = ("link", "lost", "on_frame")

    def __init__(
        self,
        on_frame: Callable[[StreamLink, bytes, memoryview], None],
        lost: Callable[[StreamLink], None],
    ) -> None:
        self.on_frame = on_frame
        self.lost = lost
        self.link: StreamLink | None = None

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        assert self.link is not None
        self.on_frame(self.link, header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        if self.link is not None:
            self.lost(self.link)


class DirectPaths:
    """The agent's direct socket, its links to other local agents, and the directory cache."""

    def __init__(
        self,
        on_frame: Callable[[StreamLink, bytes, memoryview], None],
        on_lost: Callable[[StreamLink], None],
        *,
        spin: float = 0.0,
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        #: Seconds a requester busy-polls for its reply before sleeping (latency mode).
        self.spin = spin
        self.address = ""
        self._server: asyncio.AbstractServer | None = None
        self._links: dict[str, StreamLink] = {}
        self._opening: dict[str, asyncio.Future[StreamLink]] = {}
        self._routes: dict[str, DirectRoute | None] = {}
        #: Directory spans of a tracing node, by subject (direct requests link to them).
        self._spans: dict[str, str] = {}
        self._inbound: set[StreamLink] = set()
        #: Agent names behind socket paths and behind the links we dialled (``Msg.sender``).
        self._path_names: dict[str, str] = {}
        self._link_names: dict[StreamLink, str] = {}
        self._path_nodes: dict[str, str] = {}
        self._link_nodes: dict[StreamLink, str] = {}
        #: Our TCP door for requesters on other hosts (``listen_tcp``), and the grants we
        #: presented on each link we dialled to one.
        self.door: GrantedDoor | None = None
        self._presented: dict[StreamLink, set[str]] = {}

    async def listen(self) -> str:
        """Open this agent's direct socket; returns its address for HELLO.

        The socket lives in Linux's abstract namespace (no file to clean up after a crash,
        no path-length limit); since such sockets have no file permissions, every connection
        is checked for the same user id (SO_PEERCRED) before a byte is read.
        """
        name = f"agent-fabric/{os.getuid()}/{os.getpid()}-{secrets.token_hex(8)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + name)
        sock.listen(128)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._accept, sock=sock)
        self.address = "@" + name
        return self.address

    async def listen_tcp(self, host: str, welcome: Callable[[], dict[str, Any]]) -> str:
        """Open a TCP door for requesters on other hosts (they need a grant); returns its
        address for HELLO (``direct_tcp``)."""
        self.door = GrantedDoor(self._on_frame, welcome, _MAX_PAYLOAD, on_lost=self._on_lost)
        return await self.door.listen(host)

    def present(
        self, route: DirectRoute, targets: list[tuple[str, int]], links: list[StreamLink]
    ) -> None:
        """Before a request on a route with grants: show each ``tcp://`` link its grant,
        once per grant (the responder keeps it for the link until it expires)."""
        for (path, _), link in zip(targets, links, strict=True):
            token = route.grants.get(path)
            if token:
                shown = self._presented.setdefault(link, set())
                if token not in shown:
                    if len(shown) > 64:
                        shown.clear()  # bounded: expired grants need not be remembered
                    present_grant(link, token)
                    shown.add(token)

    def _accept(self) -> StreamLink:
        events = _LinkEvents(self._on_frame, self._inbound_lost)
        link = _SameUserLink(_MAX_PAYLOAD, events)
        events.link = link
        self._inbound.add(link)
        return link

    def _inbound_lost(self, link: StreamLink) -> None:
        self._inbound.discard(link)
        self._on_lost(link)  # streams we serve on it have lost their reader

    def name_of(self, link: StreamLink) -> str:
        """The agent we dialled on ``link`` ("" for a link we did not dial)."""
        return self._link_names.get(link, "")

    def node_of(self, link: StreamLink, here: str) -> str:
        """The node of the agent we dialled on ``link``: ``here`` unless it is on another
        host."""
        return self._link_nodes.get(link, here)

    def _outbound_lost(self, link: StreamLink) -> None:
        self._link_names.pop(link, None)
        self._link_nodes.pop(link, None)
        self._presented.pop(link, None)
        for path, known in list(self._links.items()):
            if known is link:
                del self._links[path]
        self._on_lost(link)

    # -- directory ------------------------------------------------------------------------

    def cached(self, subject: str) -> DirectRoute | bool | None:
        """The cached route, None when the node said "not direct", False when not cached
        (or when its grants are about to run out: resolving again fetches fresh ones)."""
        route = self._routes.get(subject, False)
        if isinstance(route, DirectRoute) and route.renew_at and time.time() >= route.renew_at:
            return False
        return route

    async def resolve(
        self, conn: Connection, subject: str, timeout: float, traceparent: str = ""
    ) -> DirectRoute | None:
        """Ask the node's directory (once per subject until it changes).

        ``traceparent`` (the asking request's span) lets a tracing node record its answer
        in that trace; the span it returns is kept for ``span_of``.

        Raises:
            NotAuthorized, InvalidSubject, Timeout, ConnectionLost: as the node answers.
        """
        ask = NODE_RESOLVE.encode_request(ResolveRequest(subject, traceparent, remote=True))
        _, payload = await conn.call(NODE_RESOLVE.subject, ask, timeout=timeout)
        answer = NODE_RESOLVE.decode_answer(None, payload)
        span = answer.span
        if span:
            if len(self._spans) > 4096:
                self._spans.clear()
            self._spans[subject] = span
        route = DirectRoute.from_wire(list(answer.targets)) if answer.direct else None
        if route is not None and route.empty:
            # Never cache "nobody": interest may be on its way from a peer node, and only
            # the node's own answer to a request says NoResponders with authority.
            return None
        if len(self._routes) > 4096:
            self._routes.clear()  # bounded; hot subjects come back on their next request
            self._path_names.clear()
            self._path_nodes.clear()
        self._routes[subject] = route
        if route is not None:
            self._path_names.update(route.names)
            self._path_nodes.update(route.nodes)
        return route

    def span_of(self, subject: str) -> str:
        """The ``traceparent`` of the node's directory span for ``subject`` ("" if none)."""
        return self._spans.get(subject, "")

    def invalidate(self, subject: str | None = None) -> None:
        """Forget cached routes: all of them (the node said interest changed) or one."""
        if subject is None:
            self._routes.clear()
        else:
            self._routes.pop(subject, None)

    # -- links --------------------------------------------------------------------------

    def link_now(self, path: str) -> StreamLink | None:
        link = self._links.get(path)
        return link if link is not None and not link.closed else None

    async def link(self, path: str) -> StreamLink:
        """The link to another local agent's socket, opened on first use.

        Raises:
            ConnectionLost: the agent is gone.
        """
        link = self.link_now(path)
        if link is not None:
            return link
        pending = self._opening.get(path)
        if pending is None:
            pending = asyncio.ensure_future(self._open(path))
            self._opening[path] = pending
            pending.add_done_callback(lambda _: self._opening.pop(path, None))
        return await asyncio.shield(pending)

    async def _open(self, path: str) -> StreamLink:
        events = _LinkEvents(self._on_frame, self._outbound_lost)
        if path.startswith("tcp://"):
            link = await open_tcp_link(path, _MAX_PAYLOAD, events)
        else:
            link = await open_unix_link(path, _MAX_PAYLOAD, events)
        events.link = link
        self._links[path] = link
        self._link_names[link] = self._path_names.get(path, "")
        if path in self._path_nodes:
            self._link_nodes[link] = self._path_nodes[path]
        return link

    def spin_until(self, link: StreamLink, done: Callable[[], bool]) -> None:
        """Latency mode: read the link in place until ``done()`` or the spin budget is spent."""
        link.flush_now()
        end = time.perf_counter() + self.spin
        while not done() and not link.closed and time.perf_counter() < end:
            link.poll()

    def spin_for_next(self, link: StreamLink) -> None:
        """Latency mode, responder side: after a reply, poll for the requester's next request
        for the spin budget, so a conversation in full swing never sleeps."""
        link.flush_now()
        end = time.perf_counter() + self.spin
        while not link.closed and time.perf_counter() < end:
            if link.poll():
                return

    async def aclose(self) -> None:
        if self.door is not None:
            await self.door.aclose()
        if self._server is not None:
            self._server.close()
        for link in [*self._links.values(), *self._inbound]:
            link.close()
        self._links.clear()


"""Joins a WebRTC link from an edge peer to an ordinary link to the node, frame by frame.

Why a bridge and not a node-side listener: the node (``fabric/node.py``) accepts links from its
own listeners only, and the gateway is the process that terminates HTTP and DTLS. Relaying
whole frames unchanged keeps the node the single place where sessions, interest and permissions
live: the edge peer's HELLO reaches the node as-is and the node answers it. The one check made
here is identity: a peer that signalled with agent A's token may not say HELLO as agent B.

Memory stays bounded: frames for an edge peer that has fallen more than ``max_backlog`` bytes
behind are dropped and counted, the same slow-consumer rule the node applies to its own links.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgpack

from fabric.errors import ConnectionLost, FabricError, NotAuthorized
from fabric.protocol import WelcomeKey, WelcomePath
from fabric.transports import Link, open_unix_link, open_zmq_link
from fabric.wire import Header, Kind, Status, decode_header, encode_header

__all__ = ["Bridge"]

log = logging.getLogger("gateways.bridge")

_MAX_EARLY_FRAMES = 64
#: HELLO and WELCOME keys that describe resources of one host (shared-memory pool, direct-path
#: sockets): meaningless, and misleading, across a WebRTC hop.
_HOST_LOCAL = frozenset({WelcomeKey.POOL, "direct"})


class _Side:
    """The handler of one link: forwards to the bridge."""

    __slots__ = ("bridge", "edge")

    def __init__(self, bridge: Bridge, edge: bool) -> None:
        self.bridge = bridge
        self.edge = edge

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        if self.edge:
            self.bridge._from_edge(header, payload)
        else:
            self.bridge._from_node(header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        self.bridge.close()


class Bridge:
    """One edge link relayed to one node link."""

    def __init__(
        self,
        edge: Link,
        *,
        agent: str | None,
        max_payload: int,
        max_backlog: int = 64 * 1024 * 1024,
        on_closed: Callable[[Bridge], None] | None = None,
        inspect: bool = True,
    ) -> None:
        self.edge = edge
        self.node: Link | None = None
        #: Agent name the edge must use in HELLO (None: any).
        self.agent = agent
        self.max_payload = max_payload
        self.max_backlog = max_backlog
        self.dropped = 0
        #: Frames for the edge dropped while it was behind, by subscription id, not yet told
        #: (STATUS SLOW_CONSUMER, as the node tells its own agents).
        self._lost: dict[int, int] = {}
        # Node-to-node links speak the mesh protocol: nothing to check or strip in them.
        self._hello_checked = not inspect
        self._welcomed = not inspect
        self._early: list[tuple[bytes, bytes]] = []
        self._closed = False
        self._on_closed = on_closed
        edge.handler = _Side(self, edge=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Frames from the edge held until the node side is attached."""
        return len(self._early)

    def node_side(self) -> _Side:
        """The handler to give the node-side link when opening it."""
        return _Side(self, edge=False)

    def attach(self, link: Link) -> None:
        """Use ``link`` as the node side; frames the edge sent meanwhile go out in order."""
        if self._closed:
            link.close()
            return
        link.handler = self.node_side()
        self.node = link
        early, self._early = self._early, []
        try:
            for header, payload in early:
                link.send(header, payload)
        except FabricError:
            self.close()

    async def dial(self, urls: list[str], *, stream: bool = False) -> None:
        """Open the node side from a node URL list (``unix://``, ``tcp://``). ``tcp://`` is
        ZeroMQ (the node's agent endpoint) unless ``stream`` (a plain-TCP mesh endpoint).

        Raises:
            ConnectionLost: no URL answered (the edge link is closed too).
        """
        errors = []
        for url in urls:
            try:
                if url.startswith("unix://"):
                    link: Link = await open_unix_link(
                        url[len("unix://") :], self.max_payload, self.node_side()
                    )
                elif stream:
                    link = await _open_tcp_stream(url, self.max_payload, self.node_side())
                else:
                    link = await open_zmq_link(url, self.node_side())
            except ConnectionLost as exc:
                errors.append(str(exc))
                continue
            self.attach(link)
            return
        self.close()
        raise ConnectionLost("; ".join(errors) or "no node URL")

    def close(self) -> None:
        """Close both links. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.edge.close()
        if self.node is not None:
            self.node.close()
        if self._on_closed is not None:
            self._on_closed(self)

    # -- relaying -----------------------------------------------------------------------

    def _from_edge(self, header: bytes, payload: memoryview) -> None:
        if self._closed:
            return
        if not self._hello_checked:
            try:
                payload = self._check_hello(header, payload)
            except NotAuthorized as exc:
                self._refuse(header, exc)
                return
        node = self.node
        if node is None:
            if len(self._early) >= _MAX_EARLY_FRAMES:
                self.close()  # a peer that floods before the node link is up is not an agent
                return
            self._early.append((header, bytes(payload)))
            return
        try:
            node.send(header, payload)
        except FabricError:
            self.close()

    def _from_node(self, header: bytes, payload: memoryview) -> None:
        if self._closed:
            return
        if not self._welcomed:
            payload = self._filter_welcome(header, payload)
        if self.edge.buffered() > self.max_backlog:
            self.dropped += 1
            try:
                sid = decode_header(header).sid
            except FabricError:
                sid = 0
            self._lost[sid] = self._lost.get(sid, 0) + 1
            return
        try:
            if self._lost:
                lost, self._lost = self._lost, {}
                for sid, count in lost.items():
                    notice = Header(Kind.STATUS, sid=sid, status=Status.SLOW_CONSUMER, seq=count)
                    self.edge.send(encode_header(notice), b"")
            self.edge.send(header, payload)
        except FabricError:
            self.close()

    def _filter_welcome(self, raw: bytes, payload: memoryview) -> memoryview:
        """Drop what WELCOME offers only to agents on the node's host: the edge peer is not
        on it, whatever socket the node saw (the bridge's)."""
        try:
            header = decode_header(raw)
        except FabricError:
            return payload
        if header.kind is not Kind.WELCOME:
            return payload
        self._welcomed = True
        try:
            welcome = msgpack.unpackb(payload, raw=False)
        except Exception:
            return payload
        if not isinstance(welcome, dict) or not _HOST_LOCAL.union({WelcomeKey.PATHS}).intersection(
            welcome
        ):
            return payload
        for key in _HOST_LOCAL:
            welcome.pop(key, None)
        if WelcomeKey.PATHS in welcome:
            # What the SDK may use: nothing of the node's host, whatever the node saw.
            welcome[WelcomeKey.PATHS] = {WelcomePath.SHM: False, WelcomePath.DIRECT: False}
        return memoryview(msgpack.packb(welcome))

    def _check_hello(self, raw: bytes, payload: memoryview) -> memoryview:
        """Until HELLO has passed, every frame is decoded; afterwards none is. HELLO loses
        what only makes sense on the node's host (a direct-path socket of the peer's host)."""
        try:
            header = decode_header(raw)
        except FabricError:
            return payload  # the node answers malformed frames itself
        if header.kind is not Kind.HELLO:
            return payload
        try:
            info = msgpack.unpackb(payload, raw=False)
        except Exception:
            return payload  # the node refuses it
        if not isinstance(info, dict):
            return payload
        name = info.get("name")
        if self.agent is not None and name != self.agent:
            raise NotAuthorized(f"signalled as agent {self.agent!r}, but said HELLO as {name!r}")
        self._hello_checked = True
        if not _HOST_LOCAL.intersection(info):
            return payload
        for key in _HOST_LOCAL:
            info.pop(key, None)
        return memoryview(msgpack.packb(info))

    def _refuse(self, raw: bytes, exc: NotAuthorized) -> None:
        try:
            msg_id = decode_header(raw).msg_id
        except FabricError:
            msg_id = 0
        err = encode_header(Header(Kind.ERR, msg_id=msg_id))
        try:
            self.edge.send(err, msgpack.packb((exc.code, exc.message)))
        except FabricError:
            pass
        log.warning("refusing WebRTC peer: %s", exc)
        self.close()


async def _open_tcp_stream(url: str, max_payload: int, handler: _Side) -> Link:
    """Frames over plain TCP, as the mesh's ``mesh_transport = "tcp"`` peer links speak them.

    Raises:
        ConnectionLost: nothing listens there.
    """
    import asyncio

    from fabric.transports import StreamLink

    host, sep, port = url.removeprefix("tcp://").rpartition(":")
    if not url.startswith("tcp://") or not sep or not port.isdigit():
        raise ConnectionLost(f"bad mesh URL {url!r}: expected tcp://HOST:PORT")
    loop = asyncio.get_running_loop()
    try:
        _, link = await loop.create_connection(
            lambda: StreamLink(max_payload, handler), host.strip("[]"), int(port)
        )
    except OSError as exc:
        raise ConnectionLost(f"cannot reach {url}: {exc.strerror or exc}") from None
    return link

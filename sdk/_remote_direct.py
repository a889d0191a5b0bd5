"""Direct requests across hosts: a responder's TCP door, guarded by grants, and the
requester's side of presenting them.

A responder started with ``FABRIC_DIRECT_TCP=<host>`` also listens on TCP at ``host`` (an
address on the cluster network) and says so at HELLO (``direct_tcp``); its node gives it the
key it signs this responder's grants with (WELCOME ``grant_key``). A requester on another
host gets the address and a grant from its own node's directory (``$node.resolve`` with
``remote``; the nodes checked permissions and signed, fabric/_remote_direct.py), dials, and
presents the grant on the link (a CONTROL ``$direct.grant`` frame, header ``grant``) before
its first request for that subject. The responder verifies it locally, with no round trip
(fabric/grants.py), and from then on takes that requester's requests for that subject on
that link until the grant expires. Any other MSG is answered ``NO_RESPONDERS``: the
requester forgets its route, sends the request through the nodes, and resolves again (a
fresh grant) for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from fabric.errors import ConnectionLost, FabricError
from fabric.grants import peek, verify
from fabric.protocol import DIRECT_GRANT, WelcomeKey
from fabric.transports import LinkHandler, StreamLink
from fabric.wire import Header, Kind, Status, decode_header, encode_header

__all__ = [
    "GRANT_HEADER",
    "GRANT_SUBJECT",
    "GrantedDoor",
    "open_tcp_link",
    "present_grant",
    "renew_at",
]

log = logging.getLogger("sdk.direct")

#: The CONTROL frame that presents a grant on a direct TCP link.
GRANT_SUBJECT = DIRECT_GRANT
GRANT_HEADER = "grant"

#: Largest frame a direct TCP link may carry before it presented a valid grant.
_UNGRANTED_MAX_PAYLOAD = 64 * 1024

Frame = Callable[[StreamLink, bytes, memoryview], None]


class _DoorEvents:
    """LinkHandler of one inbound TCP link: every frame passes the door's check first."""

    __slots__ = ("door", "link")

    def __init__(self, door: GrantedDoor) -> None:
        self.door = door
        self.link: StreamLink | None = None

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        assert self.link is not None
        self.door.frame(self.link, header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        if self.link is not None:
            self.door.lost(self.link)


class GrantedDoor:
    """The responder's TCP listener and the grants presented on each of its links."""

    def __init__(
        self,
        on_frame: Frame,
        welcome: Callable[[], dict[str, object]],
        max_payload: int,
        on_lost: Callable[[StreamLink], None] | None = None,
    ):
        self._on_frame = on_frame
        #: Told when a requester's link closes (the streams it was reading end).
        self._on_lost = on_lost
        #: The current connection's WELCOME (its key changes when the node restarts).
        self._welcome = welcome
        self._max_payload = max_payload
        self.address = ""
        self._server: asyncio.AbstractServer | None = None
        #: Per link: subject -> wall-clock expiry of the grant presented for it.
        self._grants: dict[StreamLink, dict[str, float]] = {}
        #: Grants that did not verify, and requests refused for want of one.
        self.refused = 0

    async def listen(self, host: str) -> str:
        """Listen on an ephemeral port of ``host``; returns ``tcp://host:port`` for HELLO."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"tcp://{host}:{port}"
        return self.address

    def _accept(self) -> StreamLink:
        events = _DoorEvents(self)
        # Anyone on the network may connect: until it shows a grant, a link may send only
        # small frames (a grant, a request that is refused).
        link = StreamLink(_UNGRANTED_MAX_PAYLOAD, events)
        events.link = link
        self._grants[link] = {}
        return link

    def lost(self, link: StreamLink) -> None:
        self._grants.pop(link, None)
        if self._on_lost is not None:
            self._on_lost(link)

    def _key(self) -> bytes | None:
        raw = self._welcome().get(WelcomeKey.GRANT_KEY)
        try:
            return bytes.fromhex(raw) if isinstance(raw, str) else None
        except ValueError:
            return None

    def frame(self, link: StreamLink, raw: bytes, payload: memoryview) -> None:
        try:
            header = decode_header(raw)
        except FabricError as exc:
            log.warning("closing a direct TCP link that sent garbage: %s", exc)
            link.close()
            return
        kind = header.kind
        if kind is Kind.CONTROL:
            if header.subject == GRANT_SUBJECT:
                self._present(link, (header.headers or {}).get(GRANT_HEADER, ""))
            return
        if kind is Kind.MSG and not (
            # Stream credit and cancel answer a stream this link opened.
            not header.reply and header.status in (Status.STREAM_CREDIT, Status.CANCELLED)
        ):
            expires = self._grants.get(link, {}).get(header.subject)
            if expires is None or time.time() >= expires:
                self.refused += 1
                if header.reply:
                    refusal = Header(Kind.STATUS, subject=header.reply, status=Status.NO_RESPONDERS)
                    link.send(encode_header(refusal))
                return
        self._on_frame(link, raw, payload)

    def _present(self, link: StreamLink, token: str) -> None:
        key = self._key()
        if key is None:
            self.refused += 1
            return
        try:
            grant = verify(token, key, self.address, time.time())
        except FabricError as exc:
            self.refused += 1
            log.info("refused a direct grant: %s", exc)
            return
        grants = self._grants.get(link)
        if grants is not None:
            if not grants:
                link.set_max_payload(self._max_payload)
            grants[grant.subject] = grant.expires

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._grants):
            link.close()
        self._grants.clear()


def renew_at(tokens: Iterable[str], now: float) -> float:
    """When a route holding these grants should be resolved again: a tenth of the shortest
    grant's remaining life (at most 5 s) before it runs out, so the responder, whose clock
    may be a little ahead, is not the one to notice. A grant we cannot read: now."""
    try:
        expires = min(peek(t).expires for t in tokens)
    except FabricError:
        return now
    return expires - min(5.0, max(0.0, expires - now) / 10)


def present_grant(link: StreamLink, token: str) -> None:
    """Send a grant on a direct TCP link (ordered before the requests that need it)."""
    frame = Header(Kind.CONTROL, subject=GRANT_SUBJECT, headers={GRANT_HEADER: token})
    link.send(encode_header(frame))


async def open_tcp_link(address: str, max_payload: int, handler: LinkHandler) -> StreamLink:
    """Dial a responder's ``tcp://host:port``.

    Raises:
        ConnectionLost: nobody listens there (any more).
    """
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    loop = asyncio.get_running_loop()
    try:
        _, link = await loop.create_connection(
            lambda: StreamLink(max_payload, handler),
            host.strip("[]"),
            int(port),
        )
    except (OSError, ValueError) as exc:
        raise ConnectionLost(f"cannot reach the responder at {address}: {exc}") from None
    return link

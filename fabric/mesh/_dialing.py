"""Dialling and accepting peer links: the mesh's dial loops, its listeners' new ends, and the
peer URL and key settings they use (``Mesh`` inherits ``Dialing``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError, ConnectionLost
from ..transports import Link, StreamLink, ZmqPeerLink
from ..wire import Header, Kind, encode_header
from ._end import _End, _EndHandler, _Held
from ._links import CurveKeys, dial_peer
from ._peer import LinkState
from ._peer_link import DUPLICATE, Action, PeerLinkMachine
from ._protocol import HELLO, PeerInfo, encode_info
from ._tcp import dial_tcp

if TYPE_CHECKING:
    from ..config import NodeSettings

log = logging.getLogger("fabric.mesh")

_HANDSHAKE_S = 3.0
#: Dials that fail this soon after the node started are counted as ``dial_retries``, not
#: ``dial_failures``: nodes of a mesh start together and a peer may not listen yet.
_START_GRACE_S = 10.0
#: Largest frame a peer may send on the plain-TCP cluster port before its HELLO is accepted.
_HANDSHAKE_MAX_PAYLOAD = 64 * 1024


def parse_peer_url(text: str) -> tuple[str, bytes | None]:
    """``tcp://host:port[?key=Z85]`` -> (endpoint, server key or None)."""
    url, sep, key = text.partition("?key=")
    return url, (key.encode() if sep else None)


def _curve_from(settings: NodeSettings) -> CurveKeys | None:
    from ..auth import load_keypair, resolve_public_key

    if settings.curve_key is None:
        if settings.curve_allowed:
            raise ConfigError("curve_allowed needs curve_key (this node's own key pair)")
        return None
    public, secret = load_keypair(settings.curve_key)
    allowed = frozenset(resolve_public_key(k) for k in settings.curve_allowed)
    for url in [*settings.seeds, *settings.leaf_of]:
        if parse_peer_url(url)[1] is None:
            # Fail closed: without the server's key this link could only be plaintext.
            raise ConfigError(f"curve_key is set but peer {url} has no ?key= server key")
    return CurveKeys(public, secret, allowed)


class Dialing:
    """The dialling and accepting side of ``Mesh``: each new end becomes a link in the
    lifecycle machine; dial loops redial as the machine allows."""

    # What the dialling side uses of the Mesh it is part of.
    settings: NodeSettings
    clock: Callable[[], float]
    curve: CurveKeys | None
    transport: str
    info: PeerInfo
    stats: dict[str, int]
    peerlinks: PeerLinkMachine[_Held]
    _ends: dict[int, _End]
    _tcp_ends: set[_End]
    _ends_by_identity: dict[bytes, _End]
    _peers_moved: asyncio.Event
    _started: float

    if TYPE_CHECKING:

        def _run(self, actions: list[Action[_Held]]) -> None: ...

        def _frame(self, end: _End, raw: bytes, payload: memoryview) -> None: ...

        def _transport_lost(self, end: _End) -> None: ...

    def _end(self, link: Link, dialed: bool) -> _End:
        """Wrap a new peer link, opened as a link in the lifecycle machine: its frames go to
        ``_frame``, its loss to ``_transport_lost``."""
        link.limit = self.settings.slow_consumer_bytes
        state = self.peerlinks.open(dialed, self.clock())
        end = _End(link, dialed, state)
        self._ends[state.id] = end
        link.handler = _EndHandler(self, end)
        return end

    def _tcp_end(self, link: StreamLink, dialed: bool) -> _End:
        end = self._end(link, dialed)
        end.on_close = lambda: self._tcp_ends.discard(end)
        self._tcp_ends.add(end)
        return end

    def _accept_tcp(self, link: StreamLink) -> None:
        # Until its HELLO is accepted a peer may send only small frames (docs/limits.md).
        link.set_max_payload(_HANDSHAKE_MAX_PAYLOAD)
        end = self._tcp_end(link, dialed=False)
        end.on_up = lambda: link.set_max_payload(self.settings.max_payload)

    def attach(self, link: Link, *, dialed: bool) -> None:
        """A peer link over a ``Link`` the caller opened (in memory, in tests): its frames and
        its loss reach the mesh through the link's handler. A dialled link says HELLO."""
        end = self._end(link, dialed)
        if dialed:
            end.send(encode_header(Header(Kind.CONTROL, subject=HELLO)), encode_info(self.info))

    async def _dial_once(self, text: str) -> _End | None:
        """Dial, send HELLO until WELCOME or the handshake time runs out. Returns the end if
        the peer said who it is (whatever became of the link since), else None."""
        url, server_key = parse_peer_url(text)
        if self.transport == "tcp":
            try:
                link = await dial_tcp(url, self.settings.max_payload, _HANDSHAKE_S)
            except (OSError, TimeoutError, ConfigError) as exc:
                log.debug("dial %s: %s", url, exc)
                self._dial_failed()
                return None
            end = self._tcp_end(link, dialed=True)
        else:
            try:
                end = self._end(dial_peer(url, self.curve, server_key), dialed=True)
            except ConnectionLost as exc:
                log.error("%s", exc)
                return None
        hello = encode_header(Header(Kind.CONTROL, subject=HELLO))
        payload = encode_info(self.info)
        loop = asyncio.get_running_loop()
        until = loop.time() + _HANDSHAKE_S
        sent = False
        while end.state.state is LinkState.HANDSHAKE and not end.closed.is_set():
            if loop.time() > until:
                self._run(self.peerlinks.give_up(end.state, self.clock()))
                break
            # ZeroMQ drops sends until it has connected (IMMEDIATE), so HELLO repeats there;
            # a TCP stream delivers the first one or fails.
            if not sent or self.transport == "zmq":
                sent = end.send(hello, payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(end.closed.wait(), 0.1)
        if end.peer:
            return end
        if not end.state.refused:
            self._dial_failed()
        return None

    def _dial_failed(self) -> None:
        starting = self.clock() - self._started < _START_GRACE_S
        self.stats["dial_retries" if starting else "dial_failures"] += 1

    async def _dial_loop(self, seed: str) -> None:
        delay = 0.1
        while True:
            end = await self._dial_once(seed)
            if end is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            await end.closed.wait()
            # Dial again once the peer is down here, not before: while it is up on another
            # link (the one kept of a duplicate pair), a new link would only be refused.
            while not self.peerlinks.may_redial(end.state):
                await self._peers_moved.wait()
            if end.state.refused not in ("", DUPLICATE):
                await asyncio.sleep(delay)  # it took us, then refused us: do not hammer it
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    async def _hub_loop(self, urls: list[str]) -> None:
        i = 0
        delay = 0.1
        while True:
            end = await self._dial_once(urls[i % len(urls)])
            if end is not None and end.state.state is LinkState.UP:
                delay = 0.1
                await end.closed.wait()
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            i += 1  # after a loss or a failure, fail over to the next hub of the list

    # -- inbound ------------------------------------------------------------------------

    def _listener_frame(self, link: ZmqPeerLink) -> None:
        """A new identity on the ZeroMQ listener (its first frame follows at once)."""
        identity = link.identity
        end = self._end(link, dialed=False)

        def forget() -> None:
            if self._ends_by_identity.get(identity) is end:
                del self._ends_by_identity[identity]

        end.on_close = forget
        self._ends_by_identity[identity] = end

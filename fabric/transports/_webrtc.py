"""Frames over a WebRTC data channel (aiortc): the link for peers behind NAT.

The data channel is treated as the ordered, reliable byte stream it is: frames are written with
the same ``u32 header length | u32 payload length`` prefix as the Unix stream link, and the byte
stream is cut into data-channel messages of at most ``CHUNK_SIZE`` bytes. So a message of any
size crosses (chunked and reassembled by ``FrameDecoder``, the fuzzed decoder every stream link
uses, which checks lengths before buffering), and many small frames share one SCTP message.
16 KiB is the size every WebRTC stack accepts (browsers included).

Memory stays bounded on the sending side: chunks are handed to the channel only while its
``bufferedAmount`` is below the high-water mark; the rest waits in ``ChunkWriter`` as views of
the caller's frames, and ``buffered()`` reports both, so ``drain()`` and the node's slow-consumer
check see the real backlog.

Security: the DTLS certificate of the peer must match the fingerprint in the session
description that signaling delivered (RFC 8827 §6.5). aiortc enforces it during the handshake;
we additionally refuse a description without a usable fingerprint before starting, and any
failure before the channel opens ends in ``ConnectionLost``: a tampered offer or answer fails
closed, never half-open. No STUN/TURN server is used unless the caller passes one (aiortc would
otherwise contact a public STUN server).

aiortc errors never leave this module: they become ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from typing_extensions import Buffer

from ..errors import ConnectionLost, FabricError, RemoteProtocolError
from ..framing import FrameDecoder, frame_prefix
from ._base import Link, LinkHandler, settle

__all__ = [
    "CHUNK_SIZE",
    "ChunkWriter",
    "WebRtcLink",
    "accept_webrtc_link",
    "open_webrtc_link",
    "sdp_fingerprints",
]

log = logging.getLogger("fabric.webrtc")

#: Largest data-channel message we send (the interoperable size; RFC 8831 §6.6).
CHUNK_SIZE = 16 * 1024
#: Bytes handed to the channel before we hold back; ``drain`` waits below it.
HIGH_WATER = 1024 * 1024
_DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
#: Algorithms aiortc can verify; a description offering none of them cannot be checked.
_SUPPORTED_DIGESTS = frozenset({"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"})
_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)

_DATA_SECTION = re.compile(r"^m=application \d+ \S*DTLS/SCTP", re.MULTILINE)

Signal = Callable[[str], Awaitable[str]]


def sdp_fingerprints(sdp: str) -> list[tuple[str, str]]:
    """The ``(algorithm, fingerprint)`` pairs of a session description that can be checked.

    Raises:
        RemoteProtocolError: none present with a supported algorithm (the peer's certificate
            could not be verified, so the description is refused).
    """
    found = [(alg.lower(), value.upper()) for alg, value in _FINGERPRINT.findall(sdp)]
    usable = [(alg, value) for alg, value in found if alg in _SUPPORTED_DIGESTS]
    if not usable:
        raise RemoteProtocolError("session description carries no usable DTLS fingerprint")
    return usable


class ChunkWriter:
    """Cuts outgoing frames into data-channel messages (pure: no channel, no loop).

    ``push`` queues one frame as a prefix and views of its bytes; ``pop`` takes whole messages of
    at most ``chunk_size`` bytes up to a byte budget, joining small frames into one message.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self._parts: deque[memoryview] = deque()
        #: Bytes queued and not yet popped.
        self.pending = 0

    def push(self, header: bytes, payload: Buffer = b"") -> None:
        """Queue one frame. The payload is referenced, not copied, until popped."""
        body = memoryview(payload).cast("B")
        head = frame_prefix(len(header), body.nbytes) + header
        if body.nbytes and body.nbytes + len(head) <= self.chunk_size:
            head += body  # small frame: one part, one join later
            body = memoryview(b"")
        self._parts.append(memoryview(head))
        if body.nbytes:
            self._parts.append(body)
        self.pending += len(head) + body.nbytes

    def pop(self, budget: int) -> list[bytes]:
        """Messages to send now: each at most ``chunk_size`` bytes, together about ``budget``
        (at least one message when anything is pending and ``budget`` > 0)."""
        out: list[bytes] = []
        taken = 0
        while self._parts and taken < budget:
            room = self.chunk_size
            pieces: list[memoryview] = []
            while self._parts and room:
                part = self._parts[0]
                if part.nbytes <= room:
                    pieces.append(self._parts.popleft())
                    room -= part.nbytes
                else:
                    pieces.append(part[:room])
                    self._parts[0] = part[room:]
                    room = 0
            chunk = b"".join(pieces)
            out.append(chunk)
            taken += len(chunk)
        self.pending -= taken
        return out


class WebRtcLink(Link):
    """One fabric link over one reliable, ordered data channel of one peer connection."""

    transport = "webrtc"

    def __init__(
        self,
        pc: Any,
        channel: Any,
        max_payload: int = _DEFAULT_MAX_PAYLOAD,
        handler: LinkHandler | None = None,
        *,
        high_water: int = HIGH_WATER,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.handler = handler
        self._pc = pc
        self._channel = channel
        self._high = high_water
        self._writer = ChunkWriter(chunk_size)
        self._decoder = FrameDecoder(max_payload)
        self._closed = False
        self._drainers: list[asyncio.Future[None]] = []
        self._closing: asyncio.Task[None] | None = None
        self._pump_scheduled = False
        channel.bufferedAmountLowThreshold = high_water // 4
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._pump)
        channel.on("close", self._on_channel_close)
        pc.on("connectionstatechange", self._on_state)

    # -- channel events -----------------------------------------------------------------

    def _on_message(self, data: bytes | str) -> None:
        if self._closed:
            return
        if isinstance(data, str):
            self._lose(RemoteProtocolError("text message on a fabric data channel"))
            return
        try:
            frames = self._decoder.feed(data)
        except FabricError as exc:
            self._lose(exc)  # framing lost: nothing after this can be trusted
            return
        handler = self.handler
        if handler is None:
            return
        for header, payload in frames:
            if self._closed:
                return
            handler.frame_received(header, payload)

    def _on_channel_close(self) -> None:
        self._lose(None)

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._lose(ConnectionLost(f"WebRTC connection {self._pc.connectionState}"))

    # -- Link ---------------------------------------------------------------------------

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed:
            raise ConnectionLost("WebRTC link is closed")
        view = memoryview(payload)
        if not view.readonly:
            # Queued bytes may wait for the channel; a writable buffer could change meanwhile
            # (the stream link's transport copies for the same reason). Read-only views are
            # immutable bytes and are kept by reference.
            view = memoryview(bytes(view))
        self._writer.push(header, view)
        if self._writer.pending >= self._writer.chunk_size:
            self._pump()  # a whole data-channel message is ready: no reason to wait
        elif not self._pump_scheduled:
            # Frames sent in one loop iteration share data-channel messages: pumped once, at
            # the end of this iteration (a lone frame still leaves in it).
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        if not self._closed:
            with contextlib.suppress(ConnectionLost):  # _pump reported it as link_lost
                self._pump()

    def _pump(self) -> None:
        channel = self._channel
        try:
            while self._writer.pending and channel.bufferedAmount < self._high:
                for chunk in self._writer.pop(self._high - channel.bufferedAmount):
                    channel.send(chunk)
        except Exception as exc:  # aiortc's InvalidStateError and friends
            self._lose(ConnectionLost(f"WebRTC send failed: {exc!r}"))
            raise ConnectionLost("WebRTC link is closed") from None
        if self.buffered() <= self._high:
            self._wake(None)

    def buffered(self) -> int:
        return self._writer.pending + int(self._channel.bufferedAmount)

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost("WebRTC link is closed")
        while self.buffered() > self._high:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            await waiter

    def close(self) -> None:
        if not self._closed and self._writer.pending:
            # Frames of this loop iteration still wait for their pump: hand them over first.
            with contextlib.suppress(ConnectionLost):
                self._pump()
        self._lose(None)

    async def aclose(self) -> None:
        """Close, and wait until the peer connection has released its sockets."""
        self.close()
        if self._closing is not None:
            await asyncio.shield(self._closing)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> str:
        return "webrtc"

    # -- internals ----------------------------------------------------------------------

    def _lose(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake(ConnectionLost("WebRTC link is closed"))
        with contextlib.suppress(Exception):
            self._channel.close()
        self._closing = asyncio.ensure_future(_close_pc(self._pc))
        if self.handler is not None:
            self.handler.link_lost(exc)

    def _wake(self, exc: BaseException | None) -> None:
        waiters, self._drainers = self._drainers, []
        settle(waiters, exc)


async def _close_pc(pc: Any) -> None:
    with contextlib.suppress(Exception):
        await pc.close()


def _peer_connection(ice_servers: list[str] | None) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    servers = [RTCIceServer(url) for url in ice_servers or []]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


async def open_webrtc_link(
    signal: Signal,
    handler: LinkHandler,
    *,
    max_payload: int = _DEFAULT_MAX_PAYLOAD,
    timeout: float = 15.0,
    ice_servers: list[str] | None = None,
) -> WebRtcLink:
    """Offer a data channel, exchange descriptions through ``signal``, and wait until it opens.

    ``signal(offer_sdp)`` must deliver the offer to the other side and return its answer SDP
    (the gateway's ``POST /v1/webrtc/offer`` does). ICE candidates travel inside the
    descriptions (aiortc gathers them before the offer is produced).

    Raises:
        ConnectionLost: signaling failed, the answer carries no usable fingerprint, the DTLS
            certificate does not match it, or the channel did not open within ``timeout``.
    """
    from aiortc import RTCSessionDescription

    pc = _peer_connection(ice_servers)
    channel = pc.createDataChannel("fabric", ordered=True)
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_open() -> None:
        if not opened.done():
            opened.set_result(None)

    def on_state() -> None:
        if pc.connectionState == "failed" and not opened.done():
            opened.set_exception(
                ConnectionLost(
                    "WebRTC connection failed (DTLS certificate not matching the signalled "
                    "fingerprint, or no ICE path)"
                )
            )

    # Messages the peer sends the moment the channel opens arrive before this coroutine
    # resumes; keep them for the link instead of dropping them.
    early: list[bytes | str] = []
    channel.on("open", on_open)
    channel.on("message", early.append)
    pc.on("connectionstatechange", on_state)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        try:
            answer = await signal(pc.localDescription.sdp)
        except FabricError as exc:
            raise ConnectionLost(f"WebRTC signaling failed: {exc}") from None
        sdp_fingerprints(answer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(timeout):
            await opened
    except TimeoutError:
        await _close_pc(pc)
        raise ConnectionLost(f"WebRTC data channel did not open within {timeout}s") from None
    except FabricError as exc:
        await _close_pc(pc)
        if isinstance(exc, ConnectionLost):
            raise
        raise ConnectionLost(f"WebRTC answer refused: {exc}") from None
    except Exception as exc:  # aiortc raises plain exceptions for bad descriptions
        await _close_pc(pc)
        raise ConnectionLost(f"WebRTC negotiation failed: {exc!r}") from None
    channel.remove_listener("message", early.append)
    pc.remove_listener("connectionstatechange", on_state)
    link = WebRtcLink(pc, channel, max_payload, handler)
    for data in early:
        link._on_message(data)
    return link


async def accept_webrtc_link(
    offer: str,
    on_link: Callable[[WebRtcLink], None],
    *,
    max_payload: int = _DEFAULT_MAX_PAYLOAD,
    timeout: float = 15.0,
    ice_servers: list[str] | None = None,
) -> str:
    """Answer an offer; ``on_link`` is called with the link once the peer's channel opens.

    A peer that never opens its channel (a tampered description fails the DTLS check) is
    dropped after ``timeout`` without ``on_link`` being called.

    Raises:
        RemoteProtocolError: the offer is not a usable session description.
    """
    from aiortc import RTCSessionDescription

    sdp_fingerprints(offer)
    if not _DATA_SECTION.search(offer):
        # aiortc would answer it with no media at all: a peer that can never open a channel.
        raise RemoteProtocolError("offer has no data-channel (m=application) section")
    pc = _peer_connection(ice_servers)
    linked = False

    def reap() -> None:
        if not linked:
            log.info("WebRTC peer never opened its channel; dropping it")
            _background(_close_pc(pc))

    reaper = asyncio.get_running_loop().call_later(timeout, reap)

    def on_channel(channel: Any) -> None:
        nonlocal linked
        if linked:
            channel.close()  # one channel per connection: a second one is not ours to serve
            return
        linked = True
        reaper.cancel()
        on_link(WebRtcLink(pc, channel, max_payload))

    pc.on("datachannel", on_channel)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        reaper.cancel()
        await _close_pc(pc)
        raise RemoteProtocolError(f"unusable WebRTC offer: {exc!r}") from None
    return str(pc.localDescription.sdp)


_TASKS: set[asyncio.Task[None]] = set()


def _background(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)

"""The WebRTC link between two real aiortc peers on this host, signalled in memory."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from webrtc_support import Collector

from fabric.errors import ConnectionLost, PayloadTooLarge
from fabric.transports import WebRtcLink, accept_webrtc_link, open_webrtc_link
from fabric.transports._webrtc import CHUNK_SIZE, HIGH_WATER

pytestmark = pytest.mark.timeout(60)


Tamper = Callable[[str], str]


def flip_fingerprint(sdp: str) -> str:
    """Change one hex digit of the DTLS fingerprint, as an attacker on signaling would."""

    def flip(m: re.Match[str]) -> str:
        value = m.group(2)
        first = "0" if value[0] != "0" else "1"
        return f"{m.group(1)}{first}{value[1:]}"

    out, n = re.subn(r"(a=fingerprint:\S+ )([0-9A-F:]+)", flip, sdp)
    assert n >= 1
    return out


async def pair(
    *,
    server_max: int = 64 * 1024 * 1024,
    tamper_offer: Tamper | None = None,
    tamper_answer: Tamper | None = None,
    timeout: float = 20.0,
) -> tuple[WebRtcLink, Collector, asyncio.Future[WebRtcLink], Collector]:
    """Client link + collector, and the server link (a future) + collector."""
    server_side: asyncio.Future[WebRtcLink] = asyncio.get_running_loop().create_future()
    server = Collector()

    def on_link(link: WebRtcLink) -> None:
        link.handler = server
        server_side.set_result(link)

    async def signal(offer: str) -> str:
        answer = await accept_webrtc_link(
            tamper_offer(offer) if tamper_offer else offer,
            on_link,
            max_payload=server_max,
            timeout=timeout,
        )
        return tamper_answer(answer) if tamper_answer else answer

    client = Collector()
    link = await open_webrtc_link(signal, client, timeout=timeout)
    return link, client, server_side, server


@pytest.fixture
async def links() -> AsyncIterator[tuple[WebRtcLink, Collector, WebRtcLink, Collector]]:
    link, client, server_side, server = await pair()
    other = await asyncio.wait_for(server_side, 20)
    yield link, client, other, server
    await link.aclose()
    await other.aclose()


async def test_frames_cross_in_order_both_ways(
    links: tuple[WebRtcLink, Collector, WebRtcLink, Collector],
) -> None:
    a, a_got, b, b_got = links
    for i in range(200):
        a.send(f"h{i}".encode(), os.urandom(i * 37))
    sent = [(f"h{i}".encode(), None) for i in range(200)]
    got = await b_got.wait_for(200)
    assert [h for h, _ in got] == [h for h, _ in sent]
    assert [len(p) for _, p in got] == [i * 37 for i in range(200)]
    b.send(b"back", b"pong")
    assert (await a_got.wait_for(1))[0] == (b"back", b"pong")


async def test_five_mib_frame_crosses_intact_with_bounded_buffering(
    links: tuple[WebRtcLink, Collector, WebRtcLink, Collector],
) -> None:
    a, _, _, b_got = links
    blob = os.urandom(5 * 1024 * 1024)
    a.send(b"big", blob)
    # Only the high-water mark went to the channel; the rest waits as views in the link.
    assert a._channel.bufferedAmount <= HIGH_WATER + CHUNK_SIZE
    assert a.buffered() > HIGH_WATER
    await asyncio.wait_for(a.drain(), 60)
    assert a.buffered() <= HIGH_WATER
    got = await b_got.wait_for(1, timeout=60)
    assert got[0][0] == b"big" and got[0][1] == blob


async def test_payload_over_the_receivers_limit_drops_the_link() -> None:
    link, _, server_side, server = await pair(server_max=1000)
    try:
        await asyncio.wait_for(server_side, 20)
        link.send(b"h", b"x" * 1001)
        exc = await asyncio.wait_for(server.lost, 20)
        assert isinstance(exc, PayloadTooLarge)
    finally:
        await link.aclose()


async def test_close_reaches_the_other_side(
    links: tuple[WebRtcLink, Collector, WebRtcLink, Collector],
) -> None:
    a, _, b, b_got = links
    a.close()
    assert a.closed
    with pytest.raises(ConnectionLost):
        a.send(b"h")
    await asyncio.wait_for(b_got.lost, 30)
    assert b.closed


async def test_tampered_answer_fingerprint_fails_closed() -> None:
    with pytest.raises(ConnectionLost):
        await pair(tamper_answer=flip_fingerprint, timeout=15)


async def test_tampered_offer_fingerprint_never_opens_a_link() -> None:
    server_side: list[WebRtcLink] = []

    async def signal(offer: str) -> str:
        return await accept_webrtc_link(flip_fingerprint(offer), server_side.append, timeout=5)

    # The answering side refuses the DTLS handshake; the offering side learns it only by its
    # open timeout (no channel ever opens), which is what "fail closed" needs.
    with pytest.raises(ConnectionLost):
        await open_webrtc_link(signal, Collector(), timeout=5)
    assert server_side == []


@pytest.mark.parametrize("strip", ["answer", "offer"])
async def test_description_without_fingerprint_is_refused(strip: str) -> None:
    def drop(sdp: str) -> str:
        return re.sub(r"a=fingerprint:.*\r?\n", "", sdp)

    kwargs: dict[str, Callable[[str], str]] = {f"tamper_{strip}": drop}
    with pytest.raises(ConnectionLost, match="fingerprint"):
        await pair(**kwargs)  # type: ignore[arg-type]


async def test_signaling_failure_is_connection_lost() -> None:
    async def signal(offer: str) -> Awaitable[str]:
        raise ConnectionLost("gateway down")

    with pytest.raises(ConnectionLost, match="signaling"):
        await open_webrtc_link(signal, Collector(), timeout=5)  # type: ignore[arg-type]


async def test_frames_sent_the_moment_the_channel_opens_are_kept() -> None:
    server_links: list[WebRtcLink] = []

    def on_link(link: WebRtcLink) -> None:
        server_links.append(link)
        link.send(b"first", b"sent from on_link")  # before the offering side has its link

    async def signal(offer: str) -> str:
        return await accept_webrtc_link(offer, on_link, timeout=20)

    client = Collector()
    link = await open_webrtc_link(signal, client, timeout=20)
    try:
        assert (await client.wait_for(1))[0] == (b"first", b"sent from on_link")
    finally:
        await link.aclose()
        for other in server_links:
            await other.aclose()

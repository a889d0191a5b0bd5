"""An agent that reaches the fabric only over a WebRTC data channel, signalled through the
gateway over HTTP, exchanging every pattern with agent processes on the cloud node."""

from __future__ import annotations

import asyncio
import os
import re

import httpx
import pytest
from webrtc_support import Cloud

from fabric.errors import ConnectionLost, NotAuthorized
from fabric.transports import open_webrtc_link
from gateways import WebRtcRelay, connect_webrtc
from sdk import Msg, connect

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]


async def test_every_pattern_over_webrtc(cloud: Cloud) -> None:
    async with (
        connect_webrtc(cloud.gateway, "edge-1") as edge,
        connect("cloud-side", cloud.node.url) as local,
    ):
        # request / reply to a responder process on the node
        reply = await edge.request("svc.echo", b"over the data channel", timeout=10)
        assert bytes(reply.data) == b"over the data channel"

        # pub/sub both ways
        sub = await edge.subscribe("events.edge.*")
        await edge.flush()
        await local.publish("events.edge.a", b"down")
        assert bytes((await sub.next(timeout=10)).data) == b"down"
        local_sub = await local.subscribe("events.cloud")
        await local.flush()
        await edge.publish("events.cloud", b"up")
        assert bytes((await local_sub.next(timeout=10)).data) == b"up"

        # the edge agent serves requests from the cloud
        async def shout(msg: Msg) -> bytes:
            return bytes(msg.data).upper()

        await edge.serve("edge.shout", shout)
        await edge.flush()
        assert bytes((await local.request("edge.shout", b"hey", timeout=10)).data) == b"HEY"

        # scatter-gather: returns the moment all three reviewers answered
        started = asyncio.get_running_loop().time()
        result = await edge.gather("review.essay", b"essay", deadline=10)
        assert sorted(bytes(r.data).decode() for r in result) == ["rev-0", "rev-1", "rev-2"]
        assert result.complete and result.reached == 3
        assert asyncio.get_running_loop().time() - started < 10

        # streaming reply with credit-based backpressure
        chunks = [bytes(c.data) async for c in edge.stream("llm.generate", b"50", timeout=20)]
        assert chunks == [f"tok{i}".encode() for i in range(50)]


async def test_five_mib_request_crosses_intact(cloud: Cloud) -> None:
    blob = os.urandom(5 * 1024 * 1024)
    async with connect_webrtc(cloud.gateway, "edge-big") as edge:
        reply = await edge.request("svc.echo", blob, timeout=60)
        assert bytes(reply.data) == blob


async def test_tokens_and_names_are_checked_at_signaling(cloud: Cloud) -> None:
    async with connect_webrtc(cloud.auth_gateway, "edge-1", token="edge-secret") as edge:
        assert bytes((await edge.request("svc.echo", b"ok", timeout=10)).data) == b"ok"
    with pytest.raises(NotAuthorized, match="bearer token"):
        async with connect_webrtc(cloud.auth_gateway, "edge-1", token="wrong"):
            pass
    # A valid token, but HELLO claims another agent: the gateway's bridge refuses it.
    with pytest.raises(NotAuthorized, match="said HELLO as"):
        async with connect_webrtc(cloud.auth_gateway, "edge-2", token="edge-secret"):
            pass


async def test_tampered_answer_through_the_gateway_fails_closed(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=cloud.gateway) as http:

        async def signal(offer: str) -> str:
            r = await http.post("/v1/webrtc/offer", json={"sdp": offer, "type": "offer"})
            assert r.status_code == 200
            return re.sub(
                r"(a=fingerprint:sha-256 )([0-9A-F])",
                lambda m: m.group(1) + ("0" if m.group(2) != "0" else "1"),
                str(r.json()["sdp"]),
            )

        class Nobody:
            def frame_received(self, header: bytes, payload: memoryview) -> None:
                raise AssertionError("no frame may arrive over a refused link")

            def link_lost(self, exc: BaseException | None) -> None:
                pass

        with pytest.raises(ConnectionLost):
            await open_webrtc_link(signal, Nobody(), timeout=10)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"sdp": "v=0\r\n", "type": "offer"}, 400),  # no fingerprint
        ({"sdp": "a=fingerprint:sha-256 AB:CD\r\n", "type": "offer"}, 400),  # not an SDP
        ({"sdp": "x", "type": "answer"}, 422),
        ({"type": "offer"}, 422),
    ],
)
async def test_bad_offers_are_refused(cloud: Cloud, body: dict[str, str], status: int) -> None:
    async with httpx.AsyncClient(base_url=cloud.gateway) as http:
        r = await http.post("/v1/webrtc/offer", json=body)
    assert r.status_code == status, r.text
    assert "error" in r.json()


async def test_edge_agent_reconnects_over_a_new_channel(cloud: Cloud) -> None:
    relay = WebRtcRelay(cloud.gateway)
    await relay.start()
    try:
        async with connect("edge-re", relay.url, direct=False) as edge:
            assert bytes((await edge.request("svc.echo", b"1", timeout=10)).data) == b"1"
            (channel,) = relay.links()
            channel.close()  # the data channel drops: the SDK sees its link drop and redials
            # A request in flight when the link drops ends in ConnectionLost; one made after
            # waits for the SDK to be back (over a new data channel) within its deadline.
            for _ in range(5):
                try:
                    reply = await edge.request("svc.echo", b"2", timeout=20)
                    break
                except ConnectionLost:
                    continue
            assert bytes(reply.data) == b"2"
            assert edge.reconnects >= 1
            assert relay.channels == 2
            assert relay.links() != [channel]
    finally:
        await relay.aclose()

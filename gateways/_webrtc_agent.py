"""An SDK agent whose link to the fabric is a WebRTC data channel: ``connect_webrtc``.

    async with connect_webrtc("http://gateway:8080", "sensor-7", token="...") as agent:
        await agent.request("svc.echo", b"hi")

How: a relay in the agent's own process listens on a private Unix socket; the SDK dials it as
it would dial a node, and each connection the SDK makes is carried over a fresh WebRTC data
channel, signalled through the gateway's ``POST /v1/webrtc/offer``. The SDK is not touched and
stays light (aiortc is only imported here), and its reconnect logic works unchanged: a dropped
channel drops the Unix link, the SDK dials again, the relay opens a new channel. The price is one
in-process hop (measured in docs/webrtc.md); a dialer hook in ``sdk/_connection.py`` can remove
it later without changing this API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fabric.errors import ConnectionLost, FabricError, NotAuthorized, RemoteProtocolError
from fabric.transports import StreamLink, WebRtcLink, open_webrtc_link
from sdk import Agent, connect

from ._bridge import Bridge

__all__ = ["WebRtcRelay", "connect_webrtc"]

_MAX_PAYLOAD = 64 * 1024 * 1024


class WebRtcRelay:
    """A local socket whose every connection is relayed over a new data channel.

    ``to="agent"`` (default): a private Unix socket for the SDK. ``to="mesh"``: a TCP port on
    ``listen_host`` that an edge node uses as its hub (``leaf_of = ["tcp://…"]`` with
    ``mesh_transport = "tcp"``); the gateway bridges it to the cloud node's cluster endpoint.
    """

    def __init__(
        self,
        gateway_url: str,
        *,
        token: str | None = None,
        timeout: float = 15.0,
        ice_servers: list[str] | None = None,
        to: str = "agent",
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        if to not in ("agent", "mesh"):
            raise ValueError("to must be 'agent' or 'mesh'")
        self.gateway_url = gateway_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._ice = ice_servers
        self._to = to
        self._listen = (listen_host, listen_port)
        self._tcp_url = ""
        self._dir: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._http: Any = None
        self._bridges: set[Bridge] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: WebRtcLink | None = None
        #: Data channels opened so far (one per SDK connection).
        self.channels = 0

    @property
    def url(self) -> str:
        """Where to point the SDK (``unix://``) or the edge node (``tcp://``)."""
        if self._tcp_url:
            return self._tcp_url
        assert self._dir is not None, "relay not started"
        return f"unix://{self._dir / 'relay.sock'}"

    def links(self) -> list[WebRtcLink]:
        """The data channels in use now (one per live SDK connection)."""
        return [
            b.node for b in self._bridges if isinstance(b.node, WebRtcLink) and not b.node.closed
        ]

    async def start(self) -> None:
        """Open the first data channel (so refusals surface here) and listen.

        Raises:
            NotAuthorized: the gateway refused the token. ConnectionLost: no channel opened.
        """
        import httpx

        self._http = httpx.AsyncClient(timeout=self._timeout)
        self._ready = await self._open_channel()
        loop = asyncio.get_running_loop()
        if self._to == "mesh":
            self._server = await loop.create_server(self._accept, *self._listen)
            host, port = self._server.sockets[0].getsockname()[:2]
            self._tcp_url = f"tcp://{host}:{port}"
            return
        self._dir = Path(tempfile.mkdtemp(prefix="fabric-webrtc-"))
        self._server = await loop.create_unix_server(self._accept, str(self._dir / "relay.sock"))

    async def aclose(self) -> None:
        """Stop listening and close every channel."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        links = [b.node for b in self._bridges if isinstance(b.node, WebRtcLink)]
        if self._ready is not None:
            links.append(self._ready)
        for bridge in list(self._bridges):
            bridge.close()
        for link in links:
            await link.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def _signal(self, offer: str) -> str:
        import httpx

        headers = {"authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            resp = await self._http.post(
                f"{self.gateway_url}/v1/webrtc/offer",
                params={"to": self._to},
                json={"sdp": offer, "type": "offer"},
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise ConnectionLost(f"cannot reach gateway {self.gateway_url}: {exc!r}") from None
        if resp.status_code in (401, 403):
            raise NotAuthorized(_message(resp))
        if resp.status_code != 200:
            raise RemoteProtocolError(f"gateway answered {resp.status_code}: {_message(resp)}")
        return str(resp.json()["sdp"])

    async def _open_channel(self) -> WebRtcLink:
        refused: list[NotAuthorized] = []

        async def signal(offer: str) -> str:
            try:
                return await self._signal(offer)
            except NotAuthorized as exc:
                refused.append(exc)
                raise

        try:
            link = await open_webrtc_link(
                signal,
                _Parked(),
                max_payload=_MAX_PAYLOAD,
                timeout=self._timeout,
                ice_servers=self._ice,
            )
        except ConnectionLost:
            if refused:
                raise refused[0] from None
            raise
        self.channels += 1
        return link

    def _accept(self) -> StreamLink:
        local = StreamLink(_MAX_PAYLOAD)
        bridge = Bridge(
            local,
            agent=None,
            max_payload=_MAX_PAYLOAD,
            on_closed=self._forget,
            inspect=self._to == "agent",
        )
        self._bridges.add(bridge)
        task = asyncio.ensure_future(self._connect(bridge))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return local

    def _forget(self, bridge: Bridge) -> None:
        self._bridges.discard(bridge)
        if isinstance(bridge.node, WebRtcLink):
            task = asyncio.ensure_future(bridge.node.aclose())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, bridge: Bridge) -> None:
        link, self._ready = self._ready, None
        if link is None or link.closed:
            try:
                link = await self._open_channel()
            except FabricError:
                bridge.close()  # the SDK sees the link drop and dials again with backoff
                return
        bridge.attach(link)


class _Parked:
    """Handler of a channel opened ahead of use: nothing arrives before our HELLO."""

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        pass

    def link_lost(self, exc: BaseException | None) -> None:
        pass


def _message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except Exception:
        return str(resp.text)[:200]


@contextlib.asynccontextmanager
async def connect_webrtc(
    gateway_url: str,
    name: str,
    *,
    token: str | None = None,
    labels: dict[str, str] | None = None,
    timeout: float = 15.0,
    ice_servers: list[str] | None = None,
    **options: Any,
) -> AsyncIterator[Agent]:
    """Join the fabric as ``name`` over a WebRTC data channel to the gateway at ``gateway_url``.

    ``token`` is the agent's credential (the bearer token of the gateway and the HELLO
    credential at the node). ``options`` go to ``sdk.connect``.

    Raises:
        NotAuthorized: the gateway or the node refused the agent.
        ConnectionLost: no data channel opened (unreachable gateway, failed DTLS check).
    """
    relay = WebRtcRelay(gateway_url, token=token, timeout=timeout, ice_servers=ice_servers)
    if "direct" in inspect.signature(connect).parameters:
        # The relay is a Unix socket, which the SDK takes for "on the node's host"; direct
        # agent-to-agent paths would then bypass the data channel. They cannot cross it.
        options.setdefault("direct", False)
    try:
        await relay.start()
        async with connect(name, relay.url, credential=token, labels=labels, **options) as agent:
            yield agent
    finally:
        await relay.aclose()

"""WebRTC signaling over HTTP: ``POST /v1/webrtc/offer`` answers an SDP offer, and the data
channel that then opens is bridged to the node (``_bridge.py``).

Signaling rides on the gateway's own authenticated HTTP endpoint, never on a third-party
service; the descriptions carry the DTLS fingerprints that ``fabric.transports._webrtc``
checks, so whoever can tamper with signaling can only make the connection fail.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures, whose
# aliases are local to the factory, at runtime.
import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query

from fabric.errors import ConfigError, ConnectionLost, NotAuthorized
from fabric.paths import default_url
from fabric.transports import WebRtcLink, accept_webrtc_link

from ._bridge import Bridge
from ._credentials import Identity
from ._models import ErrorOut, SdpIn, SdpOut
from ._status import error_body

__all__ = ["Signaling"]

log = logging.getLogger("gateways.signaling")

_NODE_MAX_PAYLOAD = 64 * 1024 * 1024


class Signaling:
    """Answers offers and keeps the bridges of the peers that connected."""

    def __init__(
        self,
        url: str | None,
        max_payload: int = _NODE_MAX_PAYLOAD,
        *,
        open_timeout: float = 15.0,
        enforce_names: bool = True,
        mesh_url: str | None = None,
        mesh_agents: list[str] | None = None,
    ) -> None:
        self._urls = [u.strip() for u in (url or default_url()).split(",") if u.strip()]
        self._mesh_urls = [u.strip() for u in (mesh_url or "").split(",") if u.strip()]
        self._mesh_agents = frozenset(mesh_agents or ())
        self._max_payload = max_payload
        self._open_timeout = open_timeout
        self._enforce_names = enforce_names
        self._bridges: set[Bridge] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Peers whose data channel opened, in total.
        self.linked = 0

    @property
    def bridges(self) -> int:
        return len(self._bridges)

    async def answer(self, offer: str, who: Identity, enforce: bool, to: str = "agent") -> str:
        """Answer ``offer``; the channel, once open, is bridged to the node as agent ``who``
        (``to="agent"``), or to the node's cluster endpoint for an edge node (``to="mesh"``).

        Raises:
            RemoteProtocolError: the offer is unusable (no fingerprint, bad SDP).
            NotAuthorized: ``who`` may not attach an edge node.
            ConfigError: ``to="mesh"`` but no mesh endpoint is configured.
        """
        mesh = to == "mesh"
        if mesh:
            if not self._mesh_urls:
                raise ConfigError("this gateway bridges no edge nodes (mesh_url is not set)")
            if enforce and who.name not in self._mesh_agents:
                raise NotAuthorized(f"agent {who.name!r} may not attach an edge node")

        def on_link(link: WebRtcLink) -> None:
            self.linked += 1
            bridge = Bridge(
                link,
                agent=who.name if enforce and not mesh else None,
                max_payload=self._max_payload,
                on_closed=self._bridges.discard,
                inspect=not mesh,
            )
            self._bridges.add(bridge)
            task = asyncio.ensure_future(self._dial(bridge, mesh))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return await accept_webrtc_link(
            offer, on_link, max_payload=self._max_payload, timeout=self._open_timeout
        )

    async def _dial(self, bridge: Bridge, mesh: bool) -> None:
        try:
            if mesh:
                await bridge.dial(self._mesh_urls, stream=True)
            else:
                await bridge.dial(self._urls)
        except ConnectionLost as exc:
            log.warning("WebRTC peer could not be bridged to the node: %s", exc)

    def install(self, app: FastAPI, identity: Callable[..., Identity]) -> None:
        """Add ``POST /v1/webrtc/offer`` to ``app``."""
        enforcing = app.state.credentials.enforcing and self._enforce_names

        @app.post(
            "/v1/webrtc/offer",
            response_model=SdpOut,
            responses={
                400: {
                    "model": ErrorOut,
                    "description": "Unusable offer (no fingerprint, bad SDP).",
                },
                401: {"model": ErrorOut, "description": "Missing or unknown bearer token."},
                403: {"model": ErrorOut, "description": "The agent may not attach an edge node."},
                404: {"model": ErrorOut, "description": "?to=mesh, but no mesh_url is set."},
                413: {"model": ErrorOut, "description": "Body larger than the limit."},
                422: {"model": ErrorOut, "description": "The body does not match the schema."},
            },
            summary="Answer a WebRTC offer; the data channel becomes a link to the node.",
        )
        async def offer(
            body: SdpIn,
            who: Annotated[Identity, Depends(identity)],
            to: Annotated[
                Literal["agent", "mesh"],
                Query(description="agent: the peer joins as an agent; mesh: as an edge node."),
            ] = "agent",
        ) -> SdpOut:
            try:
                sdp = await self.answer(body.sdp, who, enforcing, to)
            except ConfigError as exc:
                raise HTTPException(404, detail=error_body("no_mesh_bridge", exc.message)) from None
            return SdpOut(sdp=sdp, type="answer")

    async def aclose(self) -> None:
        """Close every bridged peer."""
        for task in list(self._tasks):
            task.cancel()
        for bridge in list(self._bridges):
            bridge.close()
            if isinstance(bridge.edge, WebRtcLink):
                # Wait for the peer connection to release its sockets before the loop ends.
                with contextlib.suppress(Exception):
                    await bridge.edge.aclose()

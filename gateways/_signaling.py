"""WebRTC signaling over HTTP: ``POST /v1/webrtc/offer`` answers an SDP offer, and the data
channel that then opens is bridged to the node (``_bridge.py``).

Signaling rides on the gateway's own authenticated HTTP endpoint, never on a third-party
service; the descriptions carry the DTLS fingerprints that ``fabric.transports._webrtc``
checks, so whoever can tamper with signaling can only make the connection fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from fabric.errors import ConnectionLost
from fabric.paths import default_url
from fabric.transports import WebRtcLink, accept_webrtc_link

from ._credentials import Identity
from ._models import ErrorOut, SdpIn, SdpOut

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
    ) -> None:
        self._urls = [u.strip() for u in (url or default_url()).split(",") if u.strip()]
        self._max_payload = max_payload
        self._open_timeout = open_timeout
        self._enforce_names = enforce_names
        self._bridges: set[Any] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Peers whose data channel opened, in total.
        self.linked = 0

    @property
    def bridges(self) -> int:
        return len(self._bridges)

    async def answer(self, offer: str, who: Identity, enforce: bool) -> str:
        """Answer ``offer``; the channel, once open, is bridged to the node as agent ``who``.

        Raises:
            RemoteProtocolError: the offer is unusable (no fingerprint, bad SDP).
        """
        from ._bridge import Bridge

        def on_link(link: WebRtcLink) -> None:
            self.linked += 1
            bridge = Bridge(
                link,
                agent=who.name if enforce else None,
                max_payload=self._max_payload,
                on_closed=self._bridges.discard,
            )
            self._bridges.add(bridge)
            task = asyncio.ensure_future(self._dial(bridge))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return await accept_webrtc_link(
            offer, on_link, max_payload=self._max_payload, timeout=self._open_timeout
        )

    async def _dial(self, bridge: Any) -> None:
        try:
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
                413: {"model": ErrorOut, "description": "Body larger than the limit."},
                422: {"model": ErrorOut, "description": "The body does not match the schema."},
            },
            summary="Answer a WebRTC offer; the data channel becomes a link to the node.",
        )
        async def offer(body: SdpIn, who: Annotated[Identity, Depends(identity)]) -> SdpOut:
            sdp = await self.answer(body.sdp, who, enforcing)
            return SdpOut(sdp=sdp, type="answer")

    async def aclose(self) -> None:
        """Close every bridged peer."""
        for task in list(self._tasks):
            task.cancel()
        for bridge in list(self._bridges):
            bridge.close()
            with contextlib.suppress(Exception):
                await bridge.edge.aclose()

"""Links: one interface, one driver per transport (Unix or TCP stream, ZeroMQ, WebRTC data
channel), used by agents and nodes alike. Everything above a ``Link`` is transport-agnostic;
``tests/transports/`` runs one conformance suite against every implementation."""

from ._base import DEFAULT_LIMIT, Link, LinkHandler
from ._stream import StreamLink, open_unix_link
from ._zmq import ZmqDealerLink, ZmqPeerLink, ZmqRouterListener, dial_zmq, open_zmq_link

__all__ = [
    "DEFAULT_LIMIT",
    "Link",
    "LinkHandler",
    "StreamLink",
    "ZmqDealerLink",
    "ZmqPeerLink",
    "ZmqRouterListener",
    "dial_zmq",
    "open_unix_link",
    "open_zmq_link",
]

# WebRTC (extra [webrtc]): aiortc is imported only when a peer connection is made.
from ._webrtc import WebRtcLink, accept_webrtc_link, open_webrtc_link

__all__ += ["WebRtcLink", "accept_webrtc_link", "open_webrtc_link"]

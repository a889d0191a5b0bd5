"""Links: one interface, several transports (Unix stream, ZeroMQ; shared memory and WebRTC
plug in the same way). Everything above a ``Link`` is transport-agnostic."""

from ._base import Link, LinkHandler
from ._stream import StreamLink, open_unix_link
from ._zmq import ZmqDealerLink, ZmqRouterListener, open_zmq_link

__all__ = [
    "Link",
    "LinkHandler",
    "StreamLink",
    "ZmqDealerLink",
    "ZmqRouterListener",
    "open_unix_link",
    "open_zmq_link",
]

# WebRTC (extra [webrtc]): aiortc is imported only when a peer connection is made.
from ._webrtc import WebRtcLink, accept_webrtc_link, open_webrtc_link

__all__ += ["WebRtcLink", "accept_webrtc_link", "open_webrtc_link"]

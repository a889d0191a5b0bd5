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

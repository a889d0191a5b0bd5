"""Slow consumers: deliveries dropped for an agent that fell behind (or held for one that
migrates), counted, and told to the agent once it has caught up (STATUS SLOW_CONSUMER)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import FabricError, SlowConsumer
from .protocol import Header, Kind, Status, encode_header

if TYPE_CHECKING:
    from .node import Node, _SessionLink


def all_behind(subject: str) -> SlowConsumer:
    """The answer to a request whose every responder is over ``slow_consumer_bytes``."""
    return SlowConsumer(
        "every responder is too far behind to take it (their backlog is over "
        "slow_consumer_bytes); retry later or add responders",
        subject=subject,
    )


def hold(
    node: Node, bound: _SessionLink, header: bytes, payload: memoryview | bytes, sid: int
) -> bool:
    """Queue a delivery for a migrating agent; bounded like a slow consumer's buffer."""
    session = bound.session
    assert session.held is not None
    size = len(header) + len(payload)
    if session.held_bytes + size > node.settings.slow_consumer_bytes:
        dropped_slow(node, bound, sid)
        return False
    # Payload views over a receive buffer stay valid: the frame decoder never reuses one.
    session.held.append((header, payload))
    session.held_bytes += size
    return True


def dropped_slow(node: Node, bound: _SessionLink, sid: int) -> None:
    """A delivery for an agent that fell behind is dropped: counted here, by transport,
    and remembered so the agent is told (``tell_lost``) once it has caught up."""
    session = bound.session
    session.dropped += 1
    lost = session.lost
    lost[sid] = lost.get(sid, 0) + 1
    stats = node.stats
    stats.dropped_slow += 1
    transport = bound.link.transport
    if transport == "unix":
        stats.dropped_slow_unix += 1
    elif transport == "tcp":
        stats.dropped_slow_tcp += 1
    elif transport == "webrtc":
        stats.dropped_slow_webrtc += 1


def tell_lost(node: Node, bound: _SessionLink) -> None:
    """STATUS SLOW_CONSUMER per subscription that lost messages, once the agent's backlog
    is back under the limit (no silent drop: the agent raises ``SlowConsumer``)."""
    link = bound.link
    if link.buffered() > link.limit:
        return
    lost, bound.session.lost = bound.session.lost, {}
    for sid, count in lost.items():
        notice = Header(Kind.STATUS, sid=max(sid, 0), status=Status.SLOW_CONSUMER, seq=count)
        try:
            link.send(encode_header(notice), b"")
        except FabricError:
            return
        node.stats.slow_notices += 1

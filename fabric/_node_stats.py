"""What a node reports: its counters (``NodeStats``) and ``Node.status()``, for ``fabric
status``, the control plane and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .metrics import transport_of

if TYPE_CHECKING:
    from .node import Node


@dataclass(slots=True)
class NodeStats:
    """Counters the node reports (``fabric status``, metrics)."""

    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    no_responders: int = 0
    dropped_slow: int = 0
    sessions_opened: int = 0
    sessions_dropped: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    timeouts: int = 0
    state_operations: int = 0
    state_errors: int = 0
    migrations: int = 0
    directory_lookups: int = 0
    #: Directory answers that reached responders on peers, and grants signed for them.
    remote_resolves: int = 0
    grants_issued: int = 0
    #: Publishes into an inbox by a session the request was never routed to (refused).
    forged_replies: int = 0
    #: ``dropped_slow`` by the transport of the agent that fell behind.
    dropped_slow_unix: int = 0
    dropped_slow_tcp: int = 0
    dropped_slow_webrtc: int = 0
    #: STATUS SLOW_CONSUMER notices sent (each tells one subscription how many it lost).
    slow_notices: int = 0


def node_status(node: Node) -> dict[str, Any]:
    """A snapshot for ``fabric status`` and the control plane."""
    return {
        "node": node.settings.name,
        "site": node.settings.site,
        "endpoints": node.endpoints,
        "stats": asdict(node.stats),
        "pool": node.pool.stats() if node.pool is not None else None,
        "handover": None if node.handover is None else asdict(node.handover.stats),
        "mesh": node.mesh.status() if node.mesh is not None else None,
        "latency": None if node.monitoring is None else node.monitoring.metrics.summary(),
        "sessions": [
            {
                "id": b.session.id,
                "name": b.session.name,
                "labels": b.session.labels,
                "state": b.session.state.value,
                "peer": b.link.peer,
                "subscriptions": [
                    {"sid": s.sid, "subject": s.pattern, "queue": s.queue}
                    for s in node.router.subscriptions(b.session)
                ],
                "dropped": b.session.dropped,
                "transport": transport_of(b.link),
                "buffered": b.link.buffered(),
                "frames_in": b.session.frames_in,
                "frames_out": b.session.frames_out,
            }
            for b in node._links.values()
        ],
    }

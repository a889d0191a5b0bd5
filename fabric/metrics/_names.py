"""Every metric the node exports, in one table: name, type, help.

The Prometheus exporter adds ``_total`` to counters; the names here are the OpenTelemetry
instrument names. docs/operations.md lists the same table; tests/metrics checks they agree.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["NODE_METRICS", "SDK_METRICS", "MetricKind"]

MetricKind = Literal["counter", "gauge", "histogram"]

#: (instrument name, kind, labels, description)
NODE_METRICS: tuple[tuple[str, MetricKind, str, str], ...] = (
    ("fabric_frames_in", "counter", "kind", "Frames received from agents, by frame kind."),
    ("fabric_frames_out", "counter", "", "Frames sent to agents."),
    ("fabric_messages_in", "counter", "origin", "Messages routed (origin: agent or peer)."),
    ("fabric_messages_out", "counter", "", "Messages delivered to local subscribers."),
    ("fabric_bytes_in", "counter", "",
     "Payload bytes of routed messages (a shared-memory payload counts its descriptor)."),
    ("fabric_bytes_out", "counter", "",
     "Payload bytes delivered to local subscribers (shared memory: descriptors)."),
    ("fabric_requests", "counter", "", "Messages routed that expect a reply."),
    ("fabric_no_responders", "counter", "", "Requests answered 'no responders'."),
    ("fabric_timeouts", "counter", "", "Control calls (state, pool) that ran out of time."),
    ("fabric_malformed", "counter", "", "Frames rejected as breaking the protocol."),
    ("fabric_slow_consumer_drops", "counter", "transport",
     "Messages dropped because a receiver was too far behind (unix, zmq, webrtc)."),
    ("fabric_sessions_opened", "counter", "", "Agent sessions accepted."),
    ("fabric_sessions_closed", "counter", "", "Agent sessions ended."),
    ("fabric_state_operations", "counter", "", "State calls served ($state.*)."),
    ("fabric_state_errors", "counter", "", "State calls answered with an error."),
    ("fabric_migrations", "counter", "", "Agent migrations completed through this node."),
    ("fabric_directory_lookups", "counter", "",
     "Directory answers for same-host direct requests (those requests skip the node)."),
    ("fabric_mesh_events", "counter", "event",
     "Mesh counters: forwarded, received, send_failed, dial_failures, refused, ..."),
    ("fabric_peer_forwarded", "counter", "peer", "Messages forwarded to each peer node."),
    ("fabric_sessions", "gauge", "transport", "Agent sessions open now."),
    ("fabric_subscriptions", "gauge", "",
     "Subscriptions held now (system subjects, _INBOX and _FABRIC, excluded)."),
    ("fabric_slow_consumers", "gauge", "",
     "Sessions open now that had messages dropped for being too far behind."),
    ("fabric_pool_bytes", "gauge", "", "Size of the shared-memory pool."),
    ("fabric_pool_bytes_in_use", "gauge", "", "Pool bytes held by slots in use."),
    ("fabric_pool_leases", "gauge", "", "Pool slots leased to receivers now."),
    ("fabric_pool_allocated", "gauge", "", "Pool slots allocated now."),
    ("fabric_peer_up", "gauge", "peer,kind,site", "1 when the link to a peer node is up."),
    ("fabric_peer_rtt_seconds", "gauge", "peer", "Smoothed round trip to each peer node."),
    ("fabric_hop_seconds", "histogram", "",
     "Time the node spends routing one message (1 in 32 sampled)."),
    ("fabric_queue_depth_bytes", "histogram", "",
     "Bytes queued towards each session, sampled every second."),
)

#: Recorded by agents (the SDK) when they run with metrics on.
SDK_METRICS: tuple[tuple[str, MetricKind, str, str], ...] = (
    ("fabric_agent_request_seconds", "histogram", "subject", "Request latency, by subject prefix."),
    ("fabric_agent_gather_seconds", "histogram", "subject", "Gather latency, by subject prefix."),
    ("fabric_agent_stream_seconds", "histogram", "subject", "Stream duration, by subject prefix."),
    ("fabric_agent_errors", "counter", "subject,error", "Failed calls, by subject and error."),
)

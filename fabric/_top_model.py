"""What ``fabric top`` shows, computed from successive node status snapshots (pure: the
caller passes ``now``; no I/O, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeRow", "PeerRow", "TopModel"]

#: Counters shown as rates (per second) in the node table.
RATE_KEYS = ("messages_in", "messages_out", "bytes_in", "requests", "no_responders",
             "dropped_slow")


@dataclass(slots=True)
class NodeRow:
    """One node's line: rates since the previous snapshot and its current gauges."""

    node: str
    site: str
    sessions: int
    subscriptions: int
    rates: dict[str, float]
    hop_p50_us: float | None
    hop_p99_us: float | None
    slow_consumers: int
    pool_used: float | None
    pool_leases: int | None
    error: str = ""


@dataclass(slots=True)
class PeerRow:
    node: str
    peer: str
    kind: str
    site: str
    state: str
    rtt_ms: float | None
    forwarded_rate: float


@dataclass
class TopModel:
    """Feed ``update(url, snapshot, now)`` (or ``failed(url, reason)``); read the rows."""

    _last: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    nodes: dict[str, NodeRow] = field(default_factory=dict)
    peers: dict[str, list[PeerRow]] = field(default_factory=dict)

    def update(self, url: str, snap: dict[str, Any], now: float) -> None:
        previous = self._last.get(url)
        elapsed = now - previous[0] if previous else 0.0
        old = previous[1] if previous else None
        stats = snap.get("stats", {})
        rates = {}
        for key in RATE_KEYS:
            if old is None or elapsed <= 0:
                rates[key] = 0.0
            else:
                rates[key] = max(0.0, (stats.get(key, 0) - old["stats"].get(key, 0)) / elapsed)
        sessions = snap.get("sessions", [])
        if isinstance(sessions, int):  # a monitoring port's /status: counts, not lists
            n_sessions, n_subs = sessions, int(snap.get("subscriptions", 0))
            slow = int(snap.get("slow_consumers", 0))
        else:
            n_sessions = len(sessions)
            n_subs = sum(
                1
                for s in sessions
                for sub in s.get("subscriptions", [])
                if not sub["subject"].startswith("_")
            )
            slow = sum(1 for s in sessions if s.get("dropped", 0))
        latency = snap.get("latency") or {}
        hop = latency.get("hop_seconds") or {}
        pool = snap.get("pool")
        self.nodes[url] = NodeRow(
            node=snap.get("node", "?"),
            site=snap.get("site", "?"),
            sessions=n_sessions,
            subscriptions=n_subs,
            rates=rates,
            hop_p50_us=hop["p50"] * 1e6 if hop.get("count") else None,
            hop_p99_us=hop["p99"] * 1e6 if hop.get("count") else None,
            slow_consumers=slow,
            pool_used=(pool["bytes_in_use"] / pool["pool_bytes"])
            if pool and pool.get("pool_bytes")
            else None,
            pool_leases=pool["leases"] if pool else None,
        )
        old_forwarded = {}
        if old is not None and old.get("mesh"):
            old_forwarded = {p["name"]: p.get("forwarded", 0) for p in old["mesh"]["peers"]}
        mesh = snap.get("mesh") or {"peers": []}
        self.peers[url] = [
            PeerRow(
                node=snap.get("node", "?"),
                peer=p["name"],
                kind=p["kind"],
                site=p["site"],
                state=p.get("state", "up"),
                rtt_ms=p.get("rtt_ms"),
                forwarded_rate=(
                    max(0.0, (p.get("forwarded", 0) - old_forwarded.get(p["name"], 0)) / elapsed)
                    if elapsed > 0 and p["name"] in old_forwarded
                    else 0.0
                ),
            )
            for p in mesh["peers"]
        ]
        self._last[url] = (now, snap)

    def forget_others(self, keep: set[str]) -> None:
        """Drop rows not polled this round (a node that left the mesh)."""
        for key in [k for k in self.nodes if k not in keep]:
            self.nodes.pop(key, None)
            self.peers.pop(key, None)
            self._last.pop(key, None)

    def failed(self, url: str, reason: str) -> None:
        """The node at ``url`` did not answer this round: keep its row, say why."""
        row = self.nodes.get(url)
        if row is None:
            row = NodeRow(url, "?", 0, 0, dict.fromkeys(RATE_KEYS, 0.0), None, None, 0,
                          None, None)
            self.nodes[url] = row
        row.error = reason
        self._last.pop(url, None)

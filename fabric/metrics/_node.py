"""The node's metrics: plain counters the node increments, read by OpenTelemetry at scrape.

The hot path pays integer increments only. Every counter and gauge here is an *observable*
instrument whose callback reads the node's counters when an exporter collects (a Prometheus
scrape, an OTLP export tick), so a message costs no OpenTelemetry call. The two histograms are
fed by samples: one publish in 32 is timed, and queue depths are read once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._histogram import LatencyHistogram, log_bounds
from ._names import NODE_METRICS

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["HOP_SAMPLE_MASK", "NodeMetrics", "transport_of"]

log = logging.getLogger("fabric.metrics")

#: A publish is timed when ``messages_in & HOP_SAMPLE_MASK == 0`` (1 in 32).
HOP_SAMPLE_MASK = 31
#: Status snapshots are shared by the callbacks of one collection.
_SNAPSHOT_TTL = 0.25

HOP_BOUNDS = log_bounds(1e-6, 1.0)
DEPTH_BOUNDS = log_bounds(64.0, 1024.0**3, per_decade=3)

_EMPTY_SNAPSHOT: dict[str, Any] = {"sessions": [], "pool": None, "mesh": None}

def transport_of(link: object) -> str:
    """``unix``, ``tcp``, ``webrtc`` (``Link.transport``), or the class name of another link."""
    return str(getattr(link, "transport", type(link).__name__))


class NodeMetrics:
    """Histograms the node samples into, and the OpenTelemetry instruments that read it.

    ``otel`` is False when OpenTelemetry (the ``otel`` extra) is not installed: the pure
    histograms and the JSON endpoints still work, ``/metrics`` says what to install.
    """

    def __init__(self, node: Node, otlp_endpoint: str | None = None) -> None:
        self._node = node
        self.hop = LatencyHistogram(HOP_BOUNDS)
        self.depth = LatencyHistogram(DEPTH_BOUNDS)
        self.started = time.time()
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_at = 0.0
        #: The node's event-loop thread: only it may take a snapshot (the OTLP reader
        #: collects on its own thread and reads the last one, at most a second old).
        self._owner = threading.get_ident()
        self.registry: Any = None
        self._provider: Any = None
        self._hop_otel: Any = None
        self._depth_otel: Any = None
        self.missing: str | None = None
        try:
            self._setup_otel(otlp_endpoint)
        except ImportError as exc:
            self.missing = (
                f"/metrics needs the otel extra ({exc.name} is missing): "
                "pip install 'agent-fabric[otel]'"
            )

    # -- samples (called by the node) ----------------------------------------------------

    def hop_sample(self, seconds: float) -> None:
        self.hop.record(seconds)
        if self._hop_otel is not None:
            self._hop_otel.record(seconds)

    def depth_sample(self, queued: int) -> None:
        self.depth.record(float(queued))
        if self._depth_otel is not None:
            self._depth_otel.record(queued)

    def sample_queues(self) -> None:
        """Record every session's queued bytes (the node calls this once a second)."""
        for session in self.snapshot(fresh=True)["sessions"]:
            self.depth_sample(session.get("buffered", 0))

    def summary(self) -> dict[str, Any]:
        """Hop latency and queue depth summaries for ``/status`` and ``fabric top``."""
        return {
            "hop_seconds": self.hop.summary(),
            "queue_depth_bytes": self.depth.summary(),
            "uptime": time.time() - self.started,
        }

    def snapshot(self, fresh: bool = False) -> dict[str, Any]:
        """The node's status, shared by the callbacks of one collection."""
        if threading.get_ident() != self._owner:
            return self._snapshot or _EMPTY_SNAPSHOT
        now = time.monotonic()
        if fresh or self._snapshot is None or now - self._snapshot_at > _SNAPSHOT_TTL:
            self._snapshot = self._node.status()
            self._snapshot_at = now
        return self._snapshot

    # -- prometheus text -------------------------------------------------------------------

    def prometheus_text(self) -> bytes:
        """The Prometheus exposition of every metric, collected now.

        Raises:
            ConfigError: the ``otel`` extra is not installed.
        """
        from ..errors import ConfigError

        if self.registry is None:
            raise ConfigError(self.missing or "metrics are not set up")
        from prometheus_client import generate_latest

        self._snapshot = None  # one fresh snapshot per scrape
        return bytes(generate_latest(self.registry))

    def shutdown(self) -> None:
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception as exc:  # an exporter failing at exit must not stop the node's exit
                log.warning("metrics: exporter shutdown failed: %s", exc)
            self._provider = None

    # -- OpenTelemetry ---------------------------------------------------------------------

    def _setup_otel(self, otlp_endpoint: str | None) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        readers: list[Any] = [
            PrometheusMetricReader(disable_target_info=True, registry=registry)
        ]
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
        name = self._node.settings.name
        # A private provider: the node's metrics never mix with an embedding app's global one.
        provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": f"fabric-node-{name}"}),
        )
        meter = provider.get_meter("agent-fabric")
        observers = self._observers()
        for metric, kind, _labels, description in NODE_METRICS:
            if kind == "counter":
                meter.create_observable_counter(
                    metric, callbacks=[_callback(observers[metric])], description=description
                )
            elif kind == "gauge":
                meter.create_observable_gauge(
                    metric, callbacks=[_callback(observers[metric])], description=description
                )
        self._hop_otel = meter.create_histogram(
            "fabric_hop_seconds",
            description=_describe("fabric_hop_seconds"),
            explicit_bucket_boundaries_advisory=[
                1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1.0,
            ],
        )
        self._depth_otel = meter.create_histogram(
            "fabric_queue_depth_bytes",
            description=_describe("fabric_queue_depth_bytes"),
            explicit_bucket_boundaries_advisory=[
                0, 1024, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
            ],
        )
        self.registry = registry
        self._provider = provider

    def _observers(self) -> dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]]:
        node = self._node
        stats = node.stats

        def one(attr: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            return lambda: [(getattr(stats, attr), {})]

        def frames_in() -> Iterable[tuple[float, dict[str, str]]]:
            from ..wire import Kind

            # only decoded (so valid) kinds are ever counted
            return [(n, {"kind": Kind(k).name.lower()}) for k, n in enumerate(node.kinds_in) if n]

        def messages_in() -> Iterable[tuple[float, dict[str, str]]]:
            mesh = self.snapshot()["mesh"]
            from_peers = 0 if mesh is None else int(mesh["stats"].get("received", 0))
            return [
                (stats.messages_in - from_peers, {"origin": "agent"}),
                (from_peers, {"origin": "peer"}),
            ]

        def drops() -> Iterable[tuple[float, dict[str, str]]]:
            return [
                (stats.dropped_slow_unix, {"transport": "unix"}),
                (stats.dropped_slow_tcp, {"transport": "tcp"}),
                (stats.dropped_slow_webrtc, {"transport": "webrtc"}),
            ]

        def sessions() -> Iterable[tuple[float, dict[str, str]]]:
            counts: dict[str, int] = {}
            for s in self.snapshot()["sessions"]:
                counts[s["transport"]] = counts.get(s["transport"], 0) + 1
            return [(n, {"transport": t}) for t, n in sorted(counts.items())] or [
                (0, {"transport": "unix"})
            ]

        def slow_consumers() -> Iterable[tuple[float, dict[str, str]]]:
            return [(sum(1 for s in self.snapshot()["sessions"] if s.get("dropped")), {})]

        def subscriptions() -> Iterable[tuple[float, dict[str, str]]]:
            total = sum(
                1
                for s in self.snapshot()["sessions"]
                for sub in s["subscriptions"]
                if not sub["subject"].startswith("_")
            )
            return [(total, {})]

        def pool(key: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            def read() -> Iterable[tuple[float, dict[str, str]]]:
                stats_ = self.snapshot()["pool"]
                return [] if stats_ is None else [(stats_[key], {})]

            return read

        def mesh_events() -> Iterable[tuple[float, dict[str, str]]]:
            mesh = self.snapshot()["mesh"]
            if mesh is None:
                return []
            return [(n, {"event": e}) for e, n in sorted(mesh["stats"].items())]

        def peers(field: str) -> Callable[[], Iterable[tuple[float, dict[str, str]]]]:
            def read() -> Iterable[tuple[float, dict[str, str]]]:
                mesh = self.snapshot()["mesh"]
                if mesh is None:
                    return []
                out: list[tuple[float, dict[str, str]]] = []
                for p in mesh["peers"]:
                    if field == "up":
                        labels = {"peer": p["name"], "kind": p["kind"], "site": p["site"]}
                        out.append((1 if p.get("state", "up") == "up" else 0, labels))
                    elif field == "rtt":
                        if p["rtt_ms"] is not None:
                            out.append((p["rtt_ms"] / 1e3, {"peer": p["name"]}))
                    else:
                        out.append((p.get("forwarded", 0), {"peer": p["name"]}))
                return out

            return read

        return {
            "fabric_frames_in": frames_in,
            "fabric_frames_out": one("frames_out"),
            "fabric_messages_in": messages_in,
            "fabric_messages_out": one("messages_out"),
            "fabric_bytes_in": one("bytes_in"),
            "fabric_bytes_out": one("bytes_out"),
            "fabric_requests": one("requests"),
            "fabric_no_responders": one("no_responders"),
            "fabric_timeouts": one("timeouts"),
            "fabric_malformed": one("malformed"),
            "fabric_slow_consumer_drops": drops,
            "fabric_sessions_opened": one("sessions_opened"),
            "fabric_sessions_closed": one("sessions_dropped"),
            "fabric_state_operations": one("state_operations"),
            "fabric_state_errors": one("state_errors"),
            "fabric_migrations": one("migrations"),
            "fabric_directory_lookups": one("directory_lookups"),
            "fabric_mesh_events": mesh_events,
            "fabric_peer_forwarded": peers("forwarded"),
            "fabric_sessions": sessions,
            "fabric_subscriptions": subscriptions,
            "fabric_slow_consumers": slow_consumers,
            "fabric_pool_bytes": pool("pool_bytes"),
            "fabric_pool_bytes_in_use": pool("bytes_in_use"),
            "fabric_pool_leases": pool("leases"),
            "fabric_pool_allocated": pool("allocated"),
            "fabric_peer_up": peers("up"),
            "fabric_peer_rtt_seconds": peers("rtt"),
        }


def _describe(metric: str) -> str:
    return next(d for n, _, _, d in NODE_METRICS if n == metric)


def _callback(read: Callable[[], Iterable[tuple[float, dict[str, str]]]]) -> Any:
    """An OpenTelemetry callback around ``read``; a failing read yields nothing, never raises
    into the exporter (a scrape during shutdown sees an empty metric, not a traceback)."""
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> Iterable[Any]:
        try:
            return [Observation(value, labels) for value, labels in read()]
        except Exception as exc:
            log.debug("metrics: reading failed: %s", exc)
            return []

    return callback

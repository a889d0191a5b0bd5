"""Node metrics (OpenTelemetry, Prometheus text) and the monitoring JSON endpoints."""

from ._histogram import LatencyHistogram, log_bounds
from ._http import MetricsServer, parse_listen
from ._names import NODE_METRICS, SDK_METRICS
from ._node import HOP_SAMPLE_MASK, NodeMetrics, transport_of
from ._serve import Monitoring, start_monitoring

__all__ = [
    "HOP_SAMPLE_MASK",
    "NODE_METRICS",
    "SDK_METRICS",
    "LatencyHistogram",
    "MetricsServer",
    "Monitoring",
    "NodeMetrics",
    "log_bounds",
    "parse_listen",
    "start_monitoring",
    "transport_of",
]

"""Wire the node's metrics and monitoring port together (``metrics`` setting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ._http import MetricsServer, parse_listen
from ._node import NodeMetrics

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["Monitoring", "start_monitoring"]

log = logging.getLogger("fabric.metrics")

#: Seconds between queue-depth samples.
QUEUE_SAMPLE_INTERVAL = 1.0


class Monitoring:
    """The node's metrics and its HTTP monitoring port; ``aclose()`` stops both."""

    def __init__(self, node: Node, metrics: NodeMetrics, server: MetricsServer | None) -> None:
        self.node = node
        self.metrics = metrics
        self.server = server
        self._sampler: asyncio.Task[None] | None = None

    @property
    def advertised(self) -> str | None:
        """The monitoring address peers may dial (None when unbound or a wildcard host)."""
        server = self.server
        if server is None or server.host in ("0.0.0.0", "::", ""):
            return None
        return server.address

    def start_sampling(self) -> None:
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(QUEUE_SAMPLE_INTERVAL)
            try:
                self.metrics.sample_queues()
            except Exception as exc:  # never let sampling take the node down
                log.debug("queue sampling failed: %s", exc)

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.server is not None:
            await self.server.aclose()
        self.metrics.shutdown()

    # -- JSON endpoints ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``/status``: the node, its counters, pool, mesh summary and latency (like varz)."""
        snap = self.metrics.snapshot(fresh=True)
        sessions = snap["sessions"]
        mesh = snap["mesh"]
        return {
            "node": snap["node"],
            "site": snap["site"],
            "endpoints": snap["endpoints"],
            "now": time.time(),
            "sessions": len(sessions),
            "subscriptions": sum(
                1 for s in sessions for sub in s["subscriptions"]
                if not sub["subject"].startswith("_")
            ),
            "slow_consumers": sum(1 for s in sessions if s.get("dropped")),
            "stats": snap["stats"],
            "pool": snap["pool"],
            "mesh": None if mesh is None else {k: v for k, v in mesh.items() if k != "peers"}
            | {"peers": len(mesh["peers"])},
            "latency": self.metrics.summary(),
        }

    def sessions(self) -> dict[str, Any]:
        """``/sessions``: every agent session (like connz)."""
        snap = self.metrics.snapshot(fresh=True)
        return {"node": snap["node"], "sessions": snap["sessions"]}

    def subscriptions(self) -> dict[str, Any]:
        """``/subscriptions``: every subscription with its agent (like subsz)."""
        snap = self.metrics.snapshot(fresh=True)
        subs = [
            {"session": s["id"], "agent": s["name"], **sub}
            for s in snap["sessions"]
            for sub in s["subscriptions"]
        ]
        return {"node": snap["node"], "count": len(subs), "subscriptions": subs}

    def peers(self) -> dict[str, Any]:
        """``/peers``: the mesh links, their state and round trips (like routez)."""
        snap = self.metrics.snapshot(fresh=True)
        mesh = snap["mesh"]
        return {
            "node": snap["node"],
            "role": None if mesh is None else mesh["role"],
            "peers": [] if mesh is None else mesh["peers"],
        }


async def start_monitoring(node: Node) -> Monitoring:
    """Metrics for ``node``; with ``settings.metrics`` set, the HTTP port too.

    Raises:
        ConfigError: naming the setting, for a bad address or a port that cannot be bound.
    """
    settings = node.settings
    listen = settings.metrics
    if listen:
        parse_listen(listen)  # a bad address fails before anything else is built
    metrics = NodeMetrics(node, settings.metrics_otlp_endpoint)
    server: MetricsServer | None = None
    monitoring = Monitoring(node, metrics, None)
    if listen:
        server = MetricsServer(
            listen,
            {
                "/status": monitoring.status,
                "/sessions": monitoring.sessions,
                "/subscriptions": monitoring.subscriptions,
                "/peers": monitoring.peers,
            },
            metrics.prometheus_text,
        )
        await server.start()
        monitoring.server = server
        if metrics.missing:
            log.warning("metrics: %s", metrics.missing)
    monitoring.start_sampling()
    return monitoring

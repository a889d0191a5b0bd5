"""Agent-side metrics: request, gather and stream latency, and errors, per subject prefix.

Off unless ``FABRIC_AGENT_METRICS=1``; then the agent records through the OpenTelemetry
metrics API of its process (the global ``MeterProvider``: the application configures the
exporter, OTLP or Prometheus). When off nothing is wrapped and OpenTelemetry is not imported.

Labels stay bounded: a subject is reduced to its first two tokens (``tasks.summarise.17`` →
``tasks.summarise``), and after ``MAX_SUBJECTS`` distinct prefixes the rest count as
``other`` — so per-item subjects and inboxes cannot grow the series without limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ._agent import Agent
    from ._msg import Msg
    from ._stream import StreamReply

__all__ = ["MAX_SUBJECTS", "AgentMetrics", "subject_label"]

MAX_SUBJECTS = 256
_ON = ("1", "true", "on", "yes")
_BUCKETS = [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5,
            5, 10, 30]


def subject_label(subject: str, seen: set[str], limit: int = MAX_SUBJECTS) -> str:
    """The bounded label for ``subject``: its first two tokens, or ``other`` once ``limit``
    distinct labels were handed out (``seen`` is updated)."""
    label = ".".join(subject.split(".", 2)[:2])
    if label in seen:
        return label
    if len(seen) >= limit:
        return "other"
    seen.add(label)
    return label


class AgentMetrics:
    """Histograms and an error counter; ``instrument(agent)`` wraps its calls."""

    def __init__(self, meter: Any) -> None:
        self._seen: set[str] = set()
        self._latency = {
            op: meter.create_histogram(
                f"fabric_agent_{op}_seconds",
                unit="s",
                description=f"{op.capitalize()} latency, by subject prefix.",
                explicit_bucket_boundaries_advisory=_BUCKETS,
            )
            for op in ("request", "gather", "stream")
        }
        self._errors = meter.create_counter(
            "fabric_agent_errors", description="Failed calls, by subject and error."
        )

    @classmethod
    def from_env(cls) -> AgentMetrics | None:
        """An instance on the global meter when ``FABRIC_AGENT_METRICS`` is on, else None.

        Raises:
            ConfigError: metrics are on but OpenTelemetry is not installed.
        """
        if os.environ.get("FABRIC_AGENT_METRICS", "").lower() not in _ON:
            return None
        try:
            from opentelemetry import metrics
        except ImportError:
            from fabric.errors import ConfigError

            raise ConfigError(
                "FABRIC_AGENT_METRICS needs OpenTelemetry: pip install 'agent-fabric[otel]'"
            ) from None
        return cls(metrics.get_meter("agent-fabric"))

    def observe(self, op: str, subject: str, seconds: float) -> None:
        self._latency[op].record(seconds, {"subject": subject_label(subject, self._seen)})

    def error(self, op: str, subject: str, exc: BaseException) -> None:
        self._errors.add(
            1,
            {"subject": subject_label(subject, self._seen), "error": type(exc).__name__,
             "operation": op},
        )

    def instrument(self, agent: Agent) -> None:
        """Wrap ``agent.request``, ``gather`` and ``stream`` (only this instance)."""
        agent.request = self._timed("request", agent.request)  # type: ignore[method-assign,assignment]
        agent.gather = self._timed("gather", agent.gather)  # type: ignore[method-assign,assignment]
        original = agent.stream

        def stream(subject: str, *args: Any, **kwargs: Any) -> StreamReply:
            return cast("StreamReply", _MeteredStream(self, subject, original(subject, *args,
                                                                                **kwargs)))

        agent.stream = stream  # type: ignore[method-assign,assignment]

    def _timed(
        self, op: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def timed(subject: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await call(subject, *args, **kwargs)
            except Exception as exc:
                self.error(op, subject, exc)
                raise
            self.observe(op, subject, time.perf_counter() - started)
            return result

        return timed


class _MeteredStream:
    """A ``StreamReply`` that records its duration when it ends and its error if it fails."""

    def __init__(self, metrics: AgentMetrics, subject: str, inner: StreamReply) -> None:
        self._metrics = metrics
        self._inner = inner
        self.subject = subject
        self._started = time.perf_counter()
        self._done = False

    def __aiter__(self) -> _MeteredStream:
        return self

    async def __anext__(self) -> Msg:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            if not self._done:
                self._done = True
                self._metrics.observe("stream", self.subject, time.perf_counter() - self._started)
            raise
        except Exception as exc:
            if not self._done:
                self._done = True
                self._metrics.error("stream", self.subject, exc)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

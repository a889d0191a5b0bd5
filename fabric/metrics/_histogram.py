"""A pure, fixed-size latency histogram: log-spaced buckets, O(1) record, quantiles on read.

The node samples its own hop latency and queue depths into one of these for ``/status`` and
``fabric top`` (p50/p99 without OpenTelemetry installed); the same samples also go to the
OpenTelemetry histogram that ``/metrics`` exports.

Rules:
1. Bucket ``i`` holds values in ``[BOUNDS[i-1], BOUNDS[i])``; the last bucket is unbounded.
2. A quantile is reported as the upper bound of the bucket that holds it (never optimistic),
   capped at the largest value recorded.
3. Memory is fixed: ``len(BOUNDS) + 1`` integers whatever is recorded.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["LatencyHistogram", "log_bounds"]


def log_bounds(low: float, high: float, per_decade: int = 10) -> tuple[float, ...]:
    """Bucket bounds from ``low`` to at least ``high``, ``per_decade`` buckets per factor 10."""
    if low <= 0 or high <= low or per_decade < 1:
        raise ValueError("need 0 < low < high and per_decade >= 1")
    bounds = []
    factor = 10 ** (1 / per_decade)
    value = low
    while value < high * factor:
        bounds.append(round(value, 12))
        value *= factor
    return tuple(bounds)


class LatencyHistogram:
    """Counts of values per bucket; ``quantile(0.99)`` reads it back."""

    __slots__ = ("bounds", "count", "counts", "max", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, value: float) -> None:
        self.counts[bisect_right(self.bounds, value)] += 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the records fall (0 when empty).

        Raises:
            ValueError: ``q`` is not within [0, 1].
        """
        if not 0 <= q <= 1:
            raise ValueError("quantile must be within [0, 1]")
        if self.count == 0:
            return 0.0
        rank = max(1, round(q * self.count))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                upper = self.bounds[i] if i < len(self.bounds) else self.max
                return min(upper, self.max)
        return self.max

    def summary(self) -> dict[str, float]:
        """count, mean, p50, p90, p99 and max: what ``/status`` shows."""
        mean = self.total / self.count if self.count else 0.0
        return {
            "count": self.count,
            "mean": mean,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "max": self.max,
        }

"""Latency statistics: HDR histograms per run, median and spread across repeats.

Pure: nothing here reads a clock or touches I/O. A run records nanosecond samples into an
``HdrHistogram`` (3 significant digits, 1 ns to 10 min); its summary gives the percentiles the
bench reports. Repeats are folded with :func:`fold_repeats`: the median of each number, and the
spread (min and max) of the p50s, so a reader sees at once whether a difference is noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from hdrh.histogram import HdrHistogram

__all__ = [
    "PERCENTILES",
    "LatencySummary",
    "RateSummary",
    "RepeatFold",
    "fold_rates",
    "fold_repeats",
    "histogram_from_samples",
    "new_histogram",
    "percentile_curve",
    "summarise",
]

#: Percentiles every latency row reports, in the order the table shows them.
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)

_LOWEST_NS = 1
_HIGHEST_NS = 600 * 1_000_000_000
_DIGITS = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram for nanosecond samples (1 ns .. 10 min, 3 significant digits)."""
    return HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _DIGITS)


def histogram_from_samples(samples_ns: Iterable[int]) -> HdrHistogram:
    """A histogram holding ``samples_ns``.

    Raises:
        ValueError: a sample is below 1 ns or above 10 minutes (a clock bug, not a latency).
    """
    hist = new_histogram()
    for sample in samples_ns:
        if sample < _LOWEST_NS or sample > _HIGHEST_NS:
            raise ValueError(f"latency sample out of range: {sample} ns")
        hist.record_value(sample)
    return hist


@dataclass(frozen=True)
class LatencySummary:
    """One run's latency numbers, in microseconds."""

    count: int
    """Samples recorded (warm-up excluded)."""
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    min_us: float
    hdr: str
    """The whole histogram, HDR-encoded and base64'd, so any other percentile can be recomputed."""

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarise(hist: HdrHistogram) -> LatencySummary:
    """Percentiles of one run.

    Raises:
        ValueError: the histogram is empty (a run that recorded nothing has no percentiles).
    """
    count = int(hist.get_total_count())
    if count == 0:
        raise ValueError("no samples recorded")
    values = hist.get_percentile_to_value_dict(list(PERCENTILES))
    encoded = hist.encode()
    return LatencySummary(
        count=count,
        mean_us=hist.get_mean_value() / 1e3,
        p50_us=values[50.0] / 1e3,
        p90_us=values[90.0] / 1e3,
        p99_us=values[99.0] / 1e3,
        p999_us=values[99.9] / 1e3,
        max_us=hist.get_max_value() / 1e3,
        min_us=hist.get_min_value() / 1e3,
        hdr=encoded.decode() if isinstance(encoded, bytes) else str(encoded),
    )


def percentile_curve(hdr: str, points: Sequence[float]) -> list[float]:
    """Latencies (µs) at ``points`` percentiles of an encoded histogram, for plots."""
    hist = HdrHistogram.decode(hdr.encode())
    values = hist.get_percentile_to_value_dict(list(points))
    return [values[p] / 1e3 for p in points]


@dataclass(frozen=True)
class RepeatFold:
    """Repeats of one case folded: median of each number, spread of the p50s."""

    repeats: int
    p50_us: float
    p50_min_us: float
    p50_max_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    """Worst sample seen in any repeat (a max is not averaged away)."""
    count: int
    """Samples over all repeats."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fold_repeats(runs: Sequence[LatencySummary]) -> RepeatFold:
    """Fold the repeats of one case.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("no repeats to fold")
    p50s = [r.p50_us for r in runs]
    return RepeatFold(
        repeats=len(runs),
        p50_us=statistics.median(p50s),
        p50_min_us=min(p50s),
        p50_max_us=max(p50s),
        p90_us=statistics.median(r.p90_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        p999_us=statistics.median(r.p999_us for r in runs),
        max_us=max(r.max_us for r in runs),
        count=sum(r.count for r in runs),
    )


@dataclass(frozen=True)
class RateSummary:
    """Repeats of a rate (messages or bytes per second): median and spread."""

    repeats: int
    rate: float
    rate_min: float
    rate_max: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fold_rates(rates: Sequence[float]) -> RateSummary:
    """Median and spread of per-repeat rates.

    Raises:
        ValueError: ``rates`` is empty.
    """
    if not rates:
        raise ValueError("no repeats to fold")
    return RateSummary(
        repeats=len(rates),
        rate=statistics.median(rates),
        rate_min=min(rates),
        rate_max=max(rates),
    )

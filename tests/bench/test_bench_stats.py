"""Statistics: HDR percentiles against known samples, and folding repeats."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench._stats import (
    fold_rates,
    fold_repeats,
    histogram_from_samples,
    percentile_curve,
    summarise,
)

# HdrHistogram with 3 significant digits: every value is within 0.1% of the true one.
_PRECISION = 1e-3


def _close(measured: float, exact: float) -> bool:
    return math.isclose(measured, exact, rel_tol=_PRECISION * 1.01)


def test_percentiles_of_one_to_ten_thousand_microseconds() -> None:
    samples = [i * 1000 for i in range(1, 10_001)]  # 1 µs .. 10 ms in ns
    summary = summarise(histogram_from_samples(samples))
    assert summary.count == 10_000
    assert _close(summary.p50_us, 5000)
    assert _close(summary.p90_us, 9000)
    assert _close(summary.p99_us, 9900)
    assert _close(summary.p999_us, 9990)
    assert _close(summary.max_us, 10_000)
    assert _close(summary.min_us, 1)
    assert _close(summary.mean_us, 5000.5)


def test_a_single_outlier_shows_in_the_tail_not_the_median() -> None:
    samples = [100_000] * 999 + [50_000_000]  # 999 samples of 100 µs, one of 50 ms
    summary = summarise(histogram_from_samples(samples))
    assert _close(summary.p50_us, 100)
    assert _close(summary.p99_us, 100)
    assert _close(summary.p999_us, 100)
    assert _close(summary.max_us, 50_000)


def test_encoded_histogram_gives_back_the_same_percentiles() -> None:
    summary = summarise(histogram_from_samples(range(1000, 2_001_000, 1000)))
    p50, p99 = percentile_curve(summary.hdr, [50.0, 99.0])
    assert p50 == summary.p50_us
    assert p99 == summary.p99_us


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1_000, max_value=10**9), min_size=1, max_size=400))
def test_p50_and_p99_match_nearest_rank_within_precision(samples: list[int]) -> None:
    summary = summarise(histogram_from_samples(samples))
    ordered = sorted(samples)
    for percentile, measured in ((50, summary.p50_us), (99, summary.p99_us)):
        rank = max(1, math.ceil(percentile / 100 * len(ordered)))
        assert _close(measured * 1e3, ordered[rank - 1])
    assert _close(summary.max_us * 1e3, ordered[-1])


def test_out_of_range_samples_and_empty_histograms_are_refused() -> None:
    with pytest.raises(ValueError):
        histogram_from_samples([0])
    with pytest.raises(ValueError):
        histogram_from_samples([601 * 10**9])
    with pytest.raises(ValueError):
        summarise(histogram_from_samples([]))


def test_fold_repeats_takes_medians_and_the_spread_of_p50s() -> None:
    runs = [
        summarise(histogram_from_samples([us * 1000] * 100 + [us * 10_000]))
        for us in (300, 100, 200)
    ]
    fold = fold_repeats(runs)
    assert fold.repeats == 3
    assert _close(fold.p50_us, 200)
    assert _close(fold.p50_min_us, 100)
    assert _close(fold.p50_max_us, 300)
    assert _close(fold.max_us, 3000)  # the worst sample of any repeat, not a median
    assert fold.count == 303
    with pytest.raises(ValueError):
        fold_repeats([])


def test_fold_rates_median_and_spread() -> None:
    fold = fold_rates([3.0, 1.0, 2.0, 10.0])
    assert fold.rate == 2.5
    assert (fold.rate_min, fold.rate_max) == (1.0, 10.0)
    with pytest.raises(ValueError):
        fold_rates([])

"""Pure parts of the metrics: the histogram, the listen-address parser, the metric table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.errors import ConfigError
from fabric.metrics import NODE_METRICS, LatencyHistogram, log_bounds, parse_listen


def test_log_bounds_cover_the_range():
    bounds = log_bounds(1e-6, 1.0)
    assert bounds[0] == 1e-6 and bounds[-1] >= 1.0
    assert list(bounds) == sorted(bounds)
    with pytest.raises(ValueError):
        log_bounds(0, 1)


@given(st.lists(st.floats(min_value=1e-7, max_value=10.0), min_size=1, max_size=200))
def test_quantiles_never_understate_and_stay_ordered(values):
    h = LatencyHistogram(log_bounds(1e-6, 1.0))
    for v in values:
        h.record(v)
    ordered = sorted(values)
    p50, p99 = h.quantile(0.5), h.quantile(0.99)
    assert p50 <= p99 <= h.max == max(values)
    # a bucket's upper bound: never below the true value at that rank
    true_p50 = ordered[max(0, round(0.5 * len(ordered)) - 1)]
    assert p50 >= min(true_p50, h.max) - 1e-12
    assert h.count == len(values)


def test_empty_histogram_and_bad_quantile():
    h = LatencyHistogram(log_bounds(1.0, 100.0))
    assert h.quantile(0.99) == 0.0
    assert h.summary()["count"] == 0
    with pytest.raises(ValueError):
        h.quantile(1.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("http://0.0.0.0:80", ("0.0.0.0", 80)),
        ("metrics-host.local:9000", ("metrics-host.local", 9000)),
    ],
)
def test_parse_listen_accepts(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "9464", "host:", ":9464", "h:70000", "h:x", "a b:1"])
def test_parse_listen_rejects_naming_the_setting(text):
    with pytest.raises(ConfigError, match="FABRIC_METRICS"):
        parse_listen(text)


def test_every_metric_is_fabric_prefixed_and_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for name, _kind, _labels, _help in NODE_METRICS:
        assert name.startswith("fabric_")
        assert name in doc, f"{name} missing from docs/operations.md"

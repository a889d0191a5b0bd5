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


@given(st.text(max_size=40))
def test_parse_listen_parses_or_raises_config_error(text):
    try:
        host, port = parse_listen(text)
    except ConfigError:
        return
    assert host and 0 <= port <= 65535


@given(st.binary(max_size=300))
def test_any_request_head_gets_an_answer_never_an_exception(head):
    from fabric.metrics import MetricsServer

    server = MetricsServer("127.0.0.1:0", {"/status": lambda: {"ok": 1}}, lambda: b"m 1\n")
    status, ctype, body = server._dispatch(head + b"\r\n\r\n")
    assert status in (200, 400, 404, 405) and ctype and isinstance(body, bytes)


def test_dispatch_routes():
    from fabric.metrics import MetricsServer

    server = MetricsServer("127.0.0.1:0", {"/status": lambda: {"ok": 1}}, lambda: b"m 1\n")
    assert server._dispatch(b"GET /metrics HTTP/1.1\r\n\r\n")[::2] == (200, b"m 1\n")
    assert server._dispatch(b"GET /status/?x=1 HTTP/1.1\r\n\r\n")[::2] == (200, b'{"ok": 1}')
    assert server._dispatch(b"POST /status HTTP/1.1\r\n\r\n")[0] == 405
    assert server._dispatch(b"GET /nope HTTP/1.1\r\n\r\n")[0] == 404

"""fabric top's arithmetic: rates from two snapshots at fixed times, no I/O."""

from __future__ import annotations

from fabric._top_model import TopModel
from fabric.top import render


def _snap(messages: int, forwarded: int, dropped: int = 0) -> dict:  # type: ignore[type-arg]
    return {
        "node": "c1",
        "site": "cloud",
        "stats": {"messages_in": messages, "messages_out": messages // 2, "bytes_in": messages * 10,
                  "requests": 0, "no_responders": 0, "dropped_slow": dropped},
        "sessions": [{"subscriptions": [{"subject": "a.b"}, {"subject": "_INBOX.x"}],
                      "dropped": dropped}],
        "pool": {"pool_bytes": 1000, "bytes_in_use": 250, "leases": 3},
        "mesh": {"peers": [{"name": "c2", "kind": "cluster", "site": "cloud", "state": "up",
                            "rtt_ms": 0.4, "forwarded": forwarded}]},
        "latency": {"hop_seconds": {"count": 10, "p50": 5e-6, "p99": 4e-5}},
    }


def test_rates_are_deltas_over_elapsed_time():
    model = TopModel()
    model.update("u", _snap(100, 10), now=50.0)
    assert model.nodes["u"].rates["messages_in"] == 0.0  # one snapshot: no rate yet
    model.update("u", _snap(300, 50, dropped=2), now=52.0)
    row = model.nodes["u"]
    assert row.rates["messages_in"] == 100.0
    assert row.rates["bytes_in"] == 1000.0
    assert row.subscriptions == 1 and row.slow_consumers == 1
    assert row.pool_used == 0.25 and row.pool_leases == 3
    assert round(row.hop_p99_us or 0) == 40
    assert model.peers["u"][0].forwarded_rate == 20.0


def test_counter_reset_never_gives_a_negative_rate_and_failures_keep_the_row():
    model = TopModel()
    model.update("u", _snap(500, 10), now=1.0)
    model.update("u", _snap(5, 1), now=2.0)  # the node restarted
    assert model.nodes["u"].rates["messages_in"] == 0.0
    model.failed("u", "ConnectionLost: gone")
    assert model.nodes["u"].error.startswith("ConnectionLost")
    model.failed("v", "Timeout")
    assert render(model, 1.0) is not None


def test_monitoring_port_shape_and_nodes_that_left():
    model = TopModel()
    model.update("e1", {"node": "e1", "site": "edge", "stats": {}, "sessions": 4,
                        "subscriptions": 7, "slow_consumers": 1, "pool": None,
                        "mesh": {"peers": []}}, now=1.0)
    row = model.nodes["e1"]
    assert (row.sessions, row.subscriptions, row.slow_consumers) == (4, 7, 1)
    model.update("u", _snap(1, 1), now=1.0)
    model.forget_others({"u"})
    assert set(model.nodes) == {"u"}

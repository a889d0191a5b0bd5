"""What the dashboard socket sends: a pure view of a node status."""

from __future__ import annotations

from gateways._dashboard import dashboard_view


def test_dashboard_view_hides_names_and_keeps_what_the_page_draws() -> None:
    status = {
        "node": "n", "site": "s",
        "stats": {"messages_in": 5, "requests": 2},
        "sessions": [{"name": "secret-agent", "subscriptions": [
            {"subject": "a.b"}, {"subject": "_INBOX.x"}]}],
        "pool": None, "latency": None,
        "mesh": {"role": "cloud", "peers": [{"name": "p", "kind": "cluster", "site": "s",
                                              "state": "up", "rtt_ms": 0.3, "forwarded": 9,
                                              "interest": [["x", ""]]}]},
    }
    view = dashboard_view(status, 12.0)
    assert view["counters"]["messages_in"] == 5 and view["counters"]["migrations"] == 0
    assert view["sessions"] == 1 and view["subscriptions"] == 1
    assert "secret-agent" not in str(view) and "interest" not in str(view)
    assert view["mesh"]["peers"][0]["rtt_ms"] == 0.3

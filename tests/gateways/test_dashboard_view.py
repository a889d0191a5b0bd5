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


def test_mesh_graph_merges_views_and_keeps_the_best_round_trip() -> None:
    from fabric.metrics._discover import mesh_graph

    def peer(name: str, kind: str, site: str, rtt: float | None, state: str = "up") -> dict:  # type: ignore[type-arg]
        return {"name": name, "kind": kind, "site": site, "rtt_ms": rtt, "state": state}

    graph = mesh_graph({
        "c1": {"site": "cloud", "mesh": {"role": "cloud", "peers": [
            peer("c2", "cluster", "cloud", 0.5), peer("e9", "leaf", "edge-x", None, "closed")]}},
        "c2": {"site": "cloud", "mesh": {"role": "cloud", "peers": [
            peer("c1", "cluster", "cloud", 0.3)]}},
    })
    nodes = {n["name"]: n for n in graph["nodes"]}
    assert nodes["e9"] == {"name": "e9", "site": "edge-x", "role": "edge", "seen": False}
    links = {(x["a"], x["b"]): x for x in graph["links"]}
    assert links[("c1", "c2")]["rtt_ms"] == 0.3
    assert links[("c1", "e9")]["kind"] == "leaf" and links[("c1", "e9")]["state"] == "closed"


def test_mesh_graph_invariants_hold_for_any_views() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fabric.metrics._discover import mesh_graph

    names = st.sampled_from(["a", "b", "c", "d"])
    peer = st.fixed_dictionaries({
        "name": names, "kind": st.sampled_from(["cluster", "leaf", "hub"]),
        "site": st.sampled_from(["cloud", "edge"]),
        "rtt_ms": st.none() | st.floats(0, 100), "state": st.sampled_from(["up", "closed"]),
    })
    views = st.dictionaries(names, st.fixed_dictionaries({
        "site": st.just("cloud"),
        "mesh": st.fixed_dictionaries({"role": st.just("cloud"), "peers": st.lists(peer)}),
    }))

    @settings(max_examples=200, deadline=None)
    @given(views)
    def check(snapshots: dict) -> None:  # type: ignore[type-arg]
        graph = mesh_graph(snapshots)
        names_in = {n["name"] for n in graph["nodes"]}
        assert len(names_in) == len(graph["nodes"])  # each node once
        pairs = [(x["a"], x["b"]) for x in graph["links"]]
        assert len(pairs) == len(set(pairs))  # each link once
        for a, b in pairs:
            assert a <= b and {a, b} <= names_in
        assert set(snapshots) <= names_in

    check()

"""The router alone: inputs with a fixed ``now``, actions out. No node, no loop, no socket."""

from __future__ import annotations

from fabric.router import (
    Answer,
    Behind,
    Count,
    Forward,
    Invalidate,
    PeerKind,
    PeerOrigin,
    Replay,
    Role,
    Router,
)
from fabric.wire import Flags, Header, Kind, Status

NOW = 100.0


def request(subject: str, flags: int = Flags.NO_RESPONDERS, timeout_ms: int = 0) -> Header:
    return Header(
        Kind.PUB, subject=subject, reply="_INBOX.me.1", msg_id=7, flags=flags,
        timeout_ms=timeout_ms,
    )


def linked(router: Router, peer: str, keys: set[tuple[str, str, tuple[tuple[str, str], ...]]]
           ) -> None:
    router.peer_up(peer, PeerKind.CLUSTER, NOW)
    router.peer_interest(peer, True, keys, (), NOW)


def test_a_request_nobody_serves_is_answered_no_responders_once() -> None:
    r = Router()
    header = request("svc.x")
    routing = r.route("s1", header)
    assert routing.local == [] and routing.peers == {}
    actions = r.routed("s1", header, b"", routing, 0, NOW)
    assert actions == [Answer("s1", "_INBOX.me.1", 7, Status.NO_RESPONDERS)]


def test_every_responder_behind_is_refused_as_slow_not_as_nobody() -> None:
    r = Router()
    header = request("svc.x")
    actions = r.routed("s1", header, b"", r.route("s1", header), 0, NOW, all_behind=True)
    assert actions == [Behind("s1", header)]


def test_a_gather_is_told_its_local_count_when_no_peer_is_involved() -> None:
    r = Router()
    for s in ("a", "b"):
        r.subscribe(s, 1, "review.*", "", {}, NOW)
    header = request("review.doc", Flags.COUNT)
    routing = r.route("asker", header)
    assert {t.session for t in routing.local} == {"a", "b"}
    (answer,) = r.routed("asker", header, b"", routing, 2, NOW, names=["a@n", "b@n"])
    assert isinstance(answer, Answer)
    assert (answer.status, answer.count, answer.names) == (Status.ROUTED, 2, ["a@n", "b@n"])


def test_a_counted_copy_opens_a_tally_closed_by_the_peers_count() -> None:
    r = Router()
    linked(r, "c2", {("review.*", "", ())})
    header = request("review.doc", Flags.COUNT)
    routing = r.route("asker", header)
    assert routing.peers == {"c2": []}
    (fwd,) = r.routed("asker", header, b"x", routing, 0, NOW)
    assert isinstance(fwd, Forward) and fwd.header.flags == Flags.COUNT and fwd.corr
    assert r.peer_count("c2", fwd.corr, 3, ["w@c2"], NOW) == [
        Answer("asker", "_INBOX.me.1", 7, Status.ROUTED, 3, ["w@c2"])
    ]


def test_a_copy_that_cannot_be_sent_counts_zero() -> None:
    r = Router()
    linked(r, "c2", {("svc.x", "", ())})
    header = request("svc.x")
    (fwd,) = r.routed("s1", header, b"", r.route("s1", header), 0, NOW)
    assert isinstance(fwd, Forward)
    assert r.copy_failed("c2", fwd.corr, NOW) == [
        Answer("s1", "_INBOX.me.1", 7, Status.NO_RESPONDERS)
    ]


def test_a_message_from_a_cluster_peer_goes_to_no_other_cluster_peer() -> None:
    r = Router(role=Role.CLOUD)
    linked(r, "c2", {("jobs.*", "", ())})
    linked(r, "c3", {("jobs.*", "", ())})
    r.peer_up("e1", PeerKind.LEAF, NOW)
    r.peer_interest("e1", True, {("jobs.*", "", ())}, (), NOW)
    header = Header(Kind.PUB, subject="jobs.run")
    assert set(r.route("local", header).peers) == {"c2", "c3", "e1"}
    assert set(r.route(PeerOrigin("c2", PeerKind.CLUSTER), header).peers) == {"e1"}
    assert set(r.route(PeerOrigin("e1", PeerKind.LEAF), header).peers) == {"c2", "c3"}


def test_a_peer_origin_that_reached_nobody_is_told_zero() -> None:
    r = Router()
    r.peer_up("c2", PeerKind.CLUSTER, NOW)
    origin = PeerOrigin("c2", PeerKind.CLUSTER)
    header = Header(Kind.PUB, subject="svc.x", reply="_INBOX.x.1", sid=9, flags=Flags.NO_RESPONDERS)
    assert r.routed(origin, header, b"", r.route(origin, header), 0, NOW) == [Count("c2", 9, 0)]


def test_a_request_waits_for_a_fresh_peers_interest_then_replays() -> None:
    r = Router()
    r.peer_up("c2", PeerKind.CLUSTER, NOW)  # its full interest set is on its way
    header = request("svc.x", timeout_ms=4000)
    assert r.routed("s1", header, b"p", r.route("s1", header), 0, NOW) == []
    assert r.held == 1 and r.next_deadline() == NOW + 2.0
    actions = r.peer_interest("c2", True, {("svc.x", "", ())}, (), NOW + 0.1)
    assert actions == [Invalidate(), Replay("s1", header, b"p")]
    assert r.held == 0


def test_a_held_request_replays_when_its_wait_runs_out() -> None:
    r = Router()
    r.peer_up("c2", PeerKind.CLUSTER, NOW)
    header = request("svc.x", timeout_ms=4000)
    r.routed("s1", header, b"p", r.route("s1", header), 0, NOW)
    assert r.tick(NOW + 1.9) == []
    assert r.tick(NOW + 2.0) == [Replay("s1", header, b"p")]
    # routed again, it is not held a second time
    assert r.routed("s1", header, b"p", r.route("s1", header), 0, NOW + 2.0, replay=True) == [
        Answer("s1", "_INBOX.me.1", 7, Status.NO_RESPONDERS)
    ]


def test_a_lost_peer_counts_zero_and_its_interest_goes() -> None:
    r = Router()
    linked(r, "c2", {("review.*", "", ())})
    header = request("review.doc", Flags.COUNT)
    r.subscribe("w", 1, "review.*", "", {}, NOW)
    routing = r.route("asker", header)
    assert len(r.routed("asker", header, b"", routing, 1, NOW)) == 1  # the copy to c2
    actions = r.peer_down("c2", NOW)
    assert Answer("asker", "_INBOX.me.1", 7, Status.ROUTED, 1, []) in actions
    assert not r.remote_interest("review.doc") and r.peers == {}


def test_local_interest_is_announced_with_labels_only_for_queue_members() -> None:
    r = Router(site="paris")
    r.peer_up("c2", PeerKind.CLUSTER, NOW)
    assert r.subscribe("s", 1, "a.b", "", {"gpu": "1"}, NOW) == [Invalidate()]
    assert r.subscribe("s", 2, "t.x", "q", {"gpu": "1"}, NOW) == [Invalidate()]
    assert r.subscribe("s", 3, "_INBOX.abc.>", "", {}, NOW) == []
    delta = r.take_announcements()["c2"]
    assert delta.add == {
        ("a.b", "", ()),
        ("t.x", "q", (("gpu", "1"), ("site", "paris"))),
        ("_INBOX.abc.>", "", ()),
    }
    r.drop("s")
    assert r.take_announcements()["c2"].remove == delta.add


def _publish(subject: str) -> Header:
    return Header(Kind.PUB, subject=subject, msg_id=1)


def test_a_repeated_subject_routes_the_same_until_local_interest_changes() -> None:
    r = Router()
    r.subscribe("a", 1, "tick.*", "", {}, NOW)
    first = r.route("p", _publish("tick.x"))
    assert [t.session for t in first.local] == ["a"]
    assert r.route("p", _publish("tick.x")) is first  # the cached routing
    r.subscribe("b", 1, "tick.x", "", {}, NOW)
    assert {t.session for t in r.route("p", _publish("tick.x")).local} == {"a", "b"}
    r.unsubscribe("a", 1, NOW)
    assert [t.session for t in r.route("p", _publish("tick.x")).local] == ["b"]
    r.drop("b")
    assert r.route("p", _publish("tick.x")).local == []
    r.subscribe("c", 1, ">", "", {}, NOW)
    assert [t.session for t in r.route("p", _publish("tick.x")).local] == ["c"]


def test_queue_groups_still_take_turns_on_a_repeated_subject() -> None:
    r = Router()
    for s in ("a", "b"):
        r.subscribe(s, 1, "work", "q", {}, NOW)
    picked = [r.route("p", _publish("work")).local[0].session for _ in range(4)]
    assert sorted(picked) == ["a", "a", "b", "b"]


def test_a_node_with_peers_does_not_use_plain_routings() -> None:
    r = Router()
    r.subscribe("a", 1, "tick.x", "", {}, NOW)
    r.route("p", _publish("tick.x"))
    linked(r, "n2", {("tick.x", "", ())})
    assert set(r.route("p", _publish("tick.x")).peers) == {"n2"}


def test_a_cached_routing_follows_peer_interest_and_peers() -> None:
    r = Router()
    r.subscribe("a", 1, "tick.x", "", {}, NOW)
    linked(r, "n2", {("tick.x", "", ())})
    first = r.route("p", _publish("tick.x"))
    assert set(first.peers) == {"n2"} and r.route("p", _publish("tick.x")) is first
    r.peer_interest("n2", False, (), [("tick.x", "", ())], NOW)
    assert r.route("p", _publish("tick.x")).peers == {}
    r.peer_interest("n2", False, [("tick.*", "", ())], (), NOW)
    assert set(r.route("p", _publish("tick.x")).peers) == {"n2"}
    r.peer_down("n2", NOW)
    assert r.route("p", _publish("tick.x")).peers == {}
    linked(r, "n3", {(">", "", ())})
    assert set(r.route("p", _publish("tick.x")).peers) == {"n3"}


def test_remote_queue_groups_and_peer_origins_are_routed_afresh() -> None:
    r = Router()
    linked(r, "n2", {("work", "q", ())})
    first = r.route("p", _publish("work"))
    assert first.peers == {"n2": [("work", "q")]}
    assert r.route("p", _publish("work")) is not first
    linked(r, "n3", {("tick.x", "", ())})
    from_n3 = PeerOrigin("n3", PeerKind.CLUSTER)
    assert r.route(from_n3, _publish("tick.x")).peers == {}  # never back where it came from
    assert set(r.route("p", _publish("tick.x")).peers) == {"n3"}
    assert r.route(from_n3, _publish("tick.x")).peers == {}


def test_a_peers_plain_copies_are_cached_per_peer_until_interest_changes() -> None:
    r = Router()
    r.subscribe("a", 1, "tick.x", "", {}, NOW)
    linked(r, "n2", {("tick.x", "", ())})
    linked(r, "n3", {("tick.x", "", ())})
    from_n2 = PeerOrigin("n2", PeerKind.CLUSTER)
    first = r.route(from_n2, _publish("tick.x"))
    assert [t.session for t in first.local] == ["a"] and first.peers == {}
    assert r.route(from_n2, _publish("tick.x")) is first
    assert r.route("p", _publish("tick.x")) is not first  # a local agent's: its own entry
    r.unsubscribe("a", 1, NOW)
    assert r.route(from_n2, _publish("tick.x")).local == []
    assigned = Header(Kind.PUB, subject="tick.x", msg_id=2, queue="tick.x q")
    assert r.route(from_n2, assigned) is not r.route(from_n2, assigned)  # groups assigned

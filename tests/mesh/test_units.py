"""Sans-I/O pieces of the mesh, without sockets: forwarding rules, interest propagation,
placement, tallies, the mesh frames, permissions and the local-mesh plan."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.auth import Authorizer, covers, overlaps
from fabric.errors import ConfigError, NotAuthorized, RemoteProtocolError
from fabric.mesh import (
    PREFER_HEADER,
    MeshInterest,
    PeerKind,
    PeerLinkState,
    RemoteEntry,
    Role,
    TallyBook,
    decode_groups,
    decode_prefer,
    encode_groups,
    plan_route,
    strategy_for,
)
from fabric.mesh._protocol import decode_announce, decode_info, encode_announce
from fabric.mesh._up import plan_local_mesh
from fabric.routing import Subscription
from fabric.subjects import matches
from sdk._agent import PREFER_HEADER as SDK_PREFER_HEADER
from sdk._agent import with_prefer

# -- forwarding rules (whole meshes of real nodes: tests/inprocess/test_topologies.py) -----


def test_cluster_message_never_goes_to_another_cluster_peer() -> None:
    cloud = strategy_for(Role.CLOUD)
    assert not cloud.may_forward(PeerKind.CLUSTER, PeerKind.CLUSTER)
    assert cloud.may_forward(PeerKind.CLUSTER, PeerKind.LEAF)
    assert cloud.may_forward(None, PeerKind.CLUSTER)
    edge = strategy_for(Role.EDGE)
    assert not edge.may_forward(PeerKind.HUB, PeerKind.HUB)
    assert edge.accepts(Role.CLOUD) is None and cloud.accepts(Role.EDGE) is PeerKind.LEAF
    # interest export mirrors forwarding exactly
    for s in (cloud, edge):
        for src in (None, *PeerKind):
            for to in PeerKind:
                if src is None:
                    assert s.exports(None, to) == s.may_forward(None, to)
                else:
                    assert s.exports(src, to) == s.may_forward(to, src)


def test_interest_counts_only_announce_presence_changes() -> None:
    mi = MeshInterest(strategy_for(Role.CLOUD))
    mi.peer_up("c2", PeerKind.CLUSTER)
    key = ("x.*", "", ())
    mi.local_add(key)
    mi.local_add(key)
    assert mi.take_deltas()["c2"].add == {key}
    mi.local_remove(key)
    assert mi.take_deltas() == {}
    mi.local_remove(key)
    assert mi.take_deltas()["c2"].remove == {key}
    # add and remove before a flush cancel out
    mi.local_add(key)
    mi.local_remove(key)
    assert mi.take_deltas() == {}


# -- placement -------------------------------------------------------------------------------


def _sub(session: str, queue: str = "", pattern: str = "tasks.run") -> Subscription:
    return Subscription(session, 1, pattern, queue)


def _entry(peer: str, queue: str = "", site: str = "cloud", **labels: str) -> RemoteEntry:
    return RemoteEntry(peer, "tasks.run", queue, tuple(sorted({"site": site, **labels}.items())))


def _plan(local, remote, prefer=None, rtts=None, only=None):  # type: ignore[no-untyped-def]
    rtts = rtts or {}
    return plan_route(
        local,
        remote,
        may_send=lambda p: True,
        only_groups=only,
        prefer=prefer or {},
        local_labels=lambda s: {"site": "edge-paris", "gpu": "0"},
        site="edge-paris",
        rtt=lambda p: rtts.get(p, 1.0),
    )


def test_local_member_first_then_site_then_round_trip() -> None:
    g = ("tasks.run", "w")
    remote = [
        _entry("far", "w", "cloud"),
        _entry("near", "w", "cloud"),
        _entry("s", "w", "edge-paris"),
    ]
    plan = _plan([_sub("me", "w")], remote)
    assert [s.session for s in plan.local] == ["me"] and plan.peers == {}
    plan = _plan([], remote, rtts={"far": 0.05, "near": 0.001, "s": 0.5})
    assert plan.peers == {"s": [g]}  # same site beats a shorter round trip
    plan = _plan([], remote[:2], rtts={"far": 0.05, "near": 0.001})
    assert plan.peers == {"near": [g]}


def test_prefer_labels_beat_locality_and_plain_interest_gets_copies() -> None:
    g = ("tasks.run", "w")
    remote = [_entry("gpu", "w", gpu="1"), _entry("p1"), _entry("p2")]
    plan = _plan([_sub("me", "w"), _sub("me-plain")], remote, prefer={"gpu": "1"})
    assert [s.session for s in plan.local] == ["me-plain"]
    assert plan.peers == {"gpu": [g], "p1": [], "p2": []}


def test_groups_from_upstream_restrict_what_is_served() -> None:
    remote = [_entry("x", "w"), _entry("y", "other")]
    plan = _plan([_sub("me", "w"), _sub("me2", "other")], remote, only={("tasks.run", "other")})
    assert [s.session for s in plan.local] == ["me2"] and plan.peers == {}


def test_group_and_prefer_encodings_round_trip() -> None:
    groups = [("a.*", "w 1"), ("b.>", "q")]
    assert decode_groups(encode_groups(groups)) == set(groups)
    assert decode_groups("") == set() and decode_groups("junk") == set()
    headers = with_prefer({"k": "v"}, {"site": "edge-paris", "gpu": "1"})
    assert SDK_PREFER_HEADER == PREFER_HEADER
    assert decode_prefer(headers) == {"site": "edge-paris", "gpu": "1"}
    assert with_prefer(None, None) is None and decode_prefer({PREFER_HEADER: ",=x,a"}) == {}


# -- tallies and links -----------------------------------------------------------------------


def test_tally_closes_on_answers_peer_loss_and_deadline() -> None:
    book: TallyBook[str] = TallyBook()
    c = book.open("req", 7, 2, {"a", "b"}, deadline=10.0)
    assert book.answer("a", c, 3) is None
    assert book.answer("a", c, 3) is None  # duplicate ignored
    done = book.answer("b", c, 1)
    assert done is not None and done.total == 6 and not done.expired
    c2 = book.open("req", 8, 1, {"a", "b"}, deadline=10.0)
    assert book.peer_lost("a") == []
    [lost] = book.peer_lost("b")
    assert lost.total == 1 and book.answer("x", c2, 1) is None
    book.open("req", 9, 4, {"a"}, deadline=5.0)
    assert book.next_deadline() == 5.0 and book.expire(4.9) == []
    [late] = book.expire(5.0)
    assert late.expired and late.total == 4 and len(book) == 0 and book.next_deadline() is None


def test_link_state_round_trip_and_silence() -> None:
    link = PeerLinkState(1, dialed=True, last_rx=0.0)
    seq = link.ping(1.0)
    link.pong(seq, 1.010)
    assert link.rtt == pytest.approx(0.010)
    link.pong(seq, 5.0)  # an unknown or repeated pong changes nothing
    assert link.rtt == pytest.approx(0.010)
    assert link.silent(4.0, 3.0) and not link.silent(2.0, 3.0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_mesh_frames_parse_or_raise_the_protocol_error(data: bytes) -> None:
    for decode in (decode_info, decode_announce):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


def test_mesh_frames_reject_bad_shapes() -> None:
    ok = encode_announce(True, {("a.>", "q", (("site", "x"),))}, set())
    assert decode_announce(ok).add == [("a.>", "q", (("site", "x"),))]
    for bad in (
        {"full": True, "add": [["a..b", "", []]]},
        {"full": True, "add": [["a", "", [["k"]]]]},
        {"full": "yes"},
        {"name": "n", "site": "s", "role": "router", "labels": {}},
    ):
        with pytest.raises(RemoteProtocolError):
            decode_announce(msgpack.packb(bad))
        with pytest.raises(RemoteProtocolError):
            decode_info(msgpack.packb(bad))


# -- permissions -----------------------------------------------------------------------------

_tokens = st.sampled_from(["a", "b", "*"])


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    toks = draw(st.lists(_tokens, min_size=1, max_size=3))
    if draw(st.booleans()):
        toks.append(">")
    return ".".join(toks)


_SUBJECTS = [
    ".".join(t) for n in (1, 2, 3, 4) for t in __import__("itertools").product("abc", repeat=n)
]


@settings(max_examples=300, deadline=None)
@given(_patterns(), _patterns())
def test_covers_and_overlaps_agree_with_brute_force(p: str, q: str) -> None:
    p_set = {s for s in _SUBJECTS if matches(p, s)}
    q_set = {s for s in _SUBJECTS if matches(q, s)}
    assert overlaps(p, q) == bool(p_set & q_set)
    if covers(p, q):
        assert q_set <= p_set
    elif ">" not in q:  # subjects up to 4 tokens witness every non-cover for short patterns
        assert not q_set <= p_set or not q_set


def test_permissions_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    digest = hashlib.sha256(b"s3").hexdigest()
    path.write_text(
        f"""
[defaults]
publish = {{ allow = ["public.>"] }}
subscribe = {{ allow = ["public.>"] }}

[agents.bot]
credential_sha256 = "{digest}"
publish = {{ allow = ["tasks.>"], deny = ["tasks.admin.>"] }}
subscribe = {{ allow = ["tasks.* workers", "events.>"], deny = ["events.secret"] }}
"""
    )
    auth = Authorizer.from_file(path)
    auth.authenticate("bot", "s3")
    auth.authenticate("anyone", None)  # defaults need no credential
    with pytest.raises(NotAuthorized):
        auth.authenticate("bot", "wrong")
    with pytest.raises(NotAuthorized):
        auth.authenticate("bot", None)
    auth.check_publish("bot", "tasks.run")
    auth.check_publish("bot", "_INBOX.abc.1")  # replies always pass
    for subject in ("tasks.admin.reset", "other"):
        with pytest.raises(NotAuthorized):
            auth.check_publish("bot", subject)
    auth.check_subscribe("bot", "tasks.run", "workers")
    auth.check_subscribe("bot", "events.public")
    for pattern, queue in (("tasks.run", ""), ("tasks.run", "other"), ("events.*", "")):
        with pytest.raises(NotAuthorized):
            auth.check_subscribe("bot", pattern, queue)
    auth.check_publish("anyone", "public.x")
    with pytest.raises(NotAuthorized):
        auth.check_publish("anyone", "tasks.run")


@pytest.mark.parametrize(
    "text",
    [
        "[agents.x]\npublish = { allow = ['a'] }\n",
        "[agents.x]\ncredential='c'\nbogus=1\n",
        "[agents.x]\ncredential='c'\npublish = { allow = ['a..b'] }\n",
        "[other]\n",
        "not toml [",
    ],
)
def test_permissions_file_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        Authorizer.from_file(path)


def test_local_mesh_plan(tmp_path: Path) -> None:
    plan = plan_local_mesh(3, 2, tmp_path, ports=[1001, 1002, 1003])
    assert [n.name for n in plan] == ["c1", "c2", "c3", "e1", "e2"]
    assert 'seeds = ["tcp://127.0.0.1:1002", "tcp://127.0.0.1:1003"]' in plan[0].config
    assert 'leaf_of = ["tcp://127.0.0.1:1002", "tcp://127.0.0.1:1003"]' in plan[4].config
    assert plan[3].site == "edge-1" and plan[3].cluster is None
    with pytest.raises(ConfigError):
        plan_local_mesh(0, 1, tmp_path)

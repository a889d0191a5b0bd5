"""The interest table: plain subscribers, queue groups, sessions coming and going."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from fabric.routing import InterestTable
from fabric.subjects import matches


def test_plain_subscribers_all_receive_and_each_group_once() -> None:
    table = InterestTable()
    table.add("s1", 1, "tasks.*")
    table.add("s2", 1, "tasks.>")
    table.add("w1", 1, "tasks.run", queue="workers")
    table.add("w2", 1, "tasks.run", queue="workers")
    table.add("w3", 1, "tasks.run", queue="auditors")
    route = table.route("tasks.run")
    sessions = Counter(sub.session for sub in route.targets)
    assert sessions["s1"] == sessions["s2"] == 1
    assert sessions["w1"] + sessions["w2"] == 1
    assert sessions["w3"] == 1


def test_queue_members_share_load_round_robin() -> None:
    table = InterestTable()
    for name in ("w1", "w2", "w3"):
        table.add(name, 7, "jobs", queue="q")
    picks = Counter(table.route("jobs").targets[0].session for _ in range(300))
    assert picks == {"w1": 100, "w2": 100, "w3": 100}


def test_ranking_prefers_best_members() -> None:
    table = InterestTable()
    table.add("near", 1, "jobs", queue="q")
    table.add("far", 1, "jobs", queue="q")
    rank = {"near": 0.0, "far": 1.0}
    picks = {
        table.route("jobs", rank=lambda s: rank[s.session]).targets[0].session for _ in range(10)
    }
    assert picks == {"near"}


def test_dropping_a_session_removes_all_its_interest() -> None:
    table = InterestTable()
    table.add("a", 1, "x.>")
    table.add("a", 2, "y", queue="q")
    table.add("b", 1, "y", queue="q")
    assert len(table.drop_session("a")) == 2
    assert [s.session for s in table.route("y").targets] == ["b"]
    assert table.route("x.1").targets == []
    assert len(table) == 1


def test_resubscribing_same_sid_replaces() -> None:
    table = InterestTable()
    table.add("a", 1, "old")
    table.add("a", 1, "new")
    assert table.route("old").targets == []
    assert len(table.route("new").targets) == 1


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "drop"]),
        st.sampled_from(["s1", "s2", "s3"]),
        st.integers(1, 3),
        st.sampled_from(["a.b", "a.*", "a.>", "*.b", "c"]),
        st.sampled_from(["", "", "g1", "g2"]),
    ),
    max_size=40,
)


@given(ops, st.sampled_from(["a.b", "a.c", "c", "x.b"]))
def test_route_matches_model(sequence, subject: str) -> None:  # type: ignore[no-untyped-def]
    table = InterestTable()
    model: dict[tuple[str, int], tuple[str, str]] = {}
    for op, session, sid, pattern, queue in sequence:
        if op == "add":
            table.add(session, sid, pattern, queue)
            model[(session, sid)] = (pattern, queue)
        elif op == "remove":
            table.remove(session, sid)
            model.pop((session, sid), None)
        else:
            table.drop_session(session)
            model = {k: v for k, v in model.items() if k[0] != session}
    targets = table.route(subject).targets
    matching = {k: v for k, v in model.items() if matches(v[0], subject)}
    plain = {k for k, v in matching.items() if not v[1]}
    groups = {(v[0], v[1]) for v in matching.values() if v[1]}
    got = [(t.session, t.sid) for t in targets]
    assert len(got) == len(set(got)), "no duplicate delivery"
    assert {k for k in got if not model[k][1]} == plain
    got_groups = Counter((model[k][0], model[k][1]) for k in got if model[k][1])
    assert set(got_groups) == groups and all(n == 1 for n in got_groups.values())

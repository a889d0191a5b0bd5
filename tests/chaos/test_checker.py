"""The chaos checker on hand-made histories: each class found, each guarantee judged."""

from __future__ import annotations

from typing import Any

from .checker import (
    GUARANTEES,
    check_messages,
    check_requests,
    check_stream,
    check_writes,
)
from .history import Event, History


def ev(kind: str, process: str, op: str, op_id: str, value: Any = None, **kw: Any) -> Event:
    return Event(kind, process, op, op_id, value, **kw)  # type: ignore[arg-type]


def test_requests_are_classified_reply_typed_untyped_wrong_and_hang() -> None:
    h = [
        ev("invoke", "c", "request", "1", "a"),
        ev("ok", "c", "request", "1", "a"),
        ev("invoke", "c", "request", "2", "b"),
        ev("fail", "c", "request", "2", error="NoResponders", typed=True),
        ev("invoke", "c", "request", "3", "c"),
        ev("fail", "c", "request", "3", error="KeyError", typed=False),
        ev("invoke", "c", "request", "4", "d"),
        ev("ok", "c", "request", "4", "somebody else's"),
        ev("invoke", "c", "request", "5", "e"),
        ev("invoke", "c", "request", "6", "f"),
        ev("info", "c", "request", "6", error="ConnectionLost"),
    ]
    r = check_requests(h)
    assert dict(r.counts) == {
        "reply": 1,
        "typed_error": 1,
        "untyped_error": 1,
        "wrong_reply": 1,
        "hang": 1,
        "indeterminate": 1,
    }
    assert r.violations("reply_or_typed_error") == {
        "untyped_error": 1,
        "wrong_reply": 1,
        "hang": 1,
    }
    assert r.anomalies["hang"] == ["5"]


def test_clean_requests_violate_nothing() -> None:
    h = [ev("invoke", "c", "request", "1", "a"), ev("ok", "c", "request", "1", "a")]
    h += [ev("invoke", "c", "request", "2", "b")]
    h += [ev("fail", "c", "request", "2", error="Timeout", typed=True)]
    assert check_requests(h).violations("reply_or_typed_error") == {}


def test_pubsub_duplicates_break_at_most_once_but_loss_does_not() -> None:
    h = [ev("invoke", "p", "publish", f"p{i}", i) for i in range(4)]
    h += [ev("ok", "p", "publish", f"p{i}", i) for i in range(3)]  # p3: unknown outcome
    h += [ev("ok", "s1", "receive", f"s1-{i}", v) for i, v in enumerate([0, 1, 1])]
    h += [ev("ok", "s2", "receive", f"s2-{i}", v) for i, v in enumerate([0, 1, 2, 3])]
    r = check_messages(h, ["s1", "s2"])
    assert r.counts["duplicated"] == 1 and r.anomalies["duplicated"] == [("s1", 1, 2)]
    assert r.counts["lost"] == 1 and r.anomalies["lost"] == [("s1", 2)]
    assert r.counts["delivered_once"] == 5  # s1: 0; s2: 0..3 (3 was in flight: fine once)
    assert r.violations("at_most_once") == {"duplicated": 1}


def test_a_delivery_nobody_published_is_a_violation() -> None:
    h = [ev("invoke", "p", "publish", "1", "a"), ev("ok", "p", "publish", "1", "a")]
    h += [ev("ok", "s", "receive", "r1", "a"), ev("ok", "s", "receive", "r2", "forged")]
    assert check_messages(h, ["s"]).violations("at_most_once") == {"unpublished": 1}


def test_stream_exactly_once_in_order() -> None:
    sends = []
    for i in range(5):
        sends += [ev("invoke", "p", "send", f"s{i}", i), ev("ok", "p", "send", f"s{i}", i)]
    good = sends + [ev("ok", "c", "receive", f"r{i}", i) for i in range(5)]
    assert check_stream(good, "p", "c").violations("exactly_once_in_order") == {}
    bad = sends + [ev("ok", "c", "receive", f"r{i}", v) for i, v in enumerate([0, 2, 1, 2])]
    r = check_stream(bad, "p", "c")
    assert r.violations("exactly_once_in_order") == {"reordered": 1, "duplicated": 1, "lost": 2}


def test_writes_acknowledged_must_survive() -> None:
    h = [
        ev("invoke", "w", "write", "1", ("a", "a1")),
        ev("ok", "w", "write", "1", 1),
        ev("invoke", "w", "write", "2", ("a", "a2")),
        ev("ok", "w", "write", "2", 2),
        ev("invoke", "w", "write", "3", ("a", "a3")),  # in flight at the crash
        ev("invoke", "w", "write", "4", ("b", "b1")),
        ev("ok", "w", "write", "4", 1),
        ev("invoke", "w", "write", "5", ("c", "c1")),
        ev("ok", "w", "write", "5", 1),
    ]
    # a: the in-flight write landed (fine); b: gone (lost); c: rolled back to nothing (lost).
    r = check_writes(h, {"a": (3, "a3"), "b": (0, None)})
    assert r.violations("acknowledged_write_durable") == {"lost_write": 2}
    assert r.counts["durable"] == 1 and r.counts["indeterminate"] == 1
    # A later version no known write made is a phantom.
    r = check_writes(h, {"a": (3, "zzz"), "b": (1, "b1"), "c": (1, "c1")})
    assert r.violations("acknowledged_write_durable") == {"phantom_write": 1}


def test_every_guarantee_names_known_classes() -> None:
    known = {
        "duplicated", "unpublished", "hang", "untyped_error", "wrong_reply", "lost_write",
        "phantom_write", "lost", "reordered",
    }  # fmt: skip
    assert set().union(*GUARANTEES.values()) <= known


def test_the_recorder_writes_what_the_checker_reads(tmp_path: Any) -> None:
    from fabric.errors import NoResponders

    from .history import load

    h = History(tmp_path / "h.jsonl")
    a = h.invoke("c", "request", "x")
    h.ok("c", "request", a, "x")
    b = h.invoke("c", "request", "y")
    h.fail("c", "request", b, NoResponders("svc"))
    c = h.invoke("c", "request", "z")
    h.fail("c", "request", c, KeyError("z"))
    h.close()
    r = check_requests(load(tmp_path / "h.jsonl"))
    assert dict(r.counts) == {"reply": 1, "typed_error": 1, "untyped_error": 1}

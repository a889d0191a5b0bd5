"""SettleBook (fabric/mesh/_settle.py): when a request that reached nobody should wait for
interest still in flight, and until when. Pure, with a fixed clock."""

from __future__ import annotations

from fabric.mesh._settle import SettleBook


def test_nothing_in_flight_means_answer_at_once() -> None:
    assert SettleBook(3.0).until("svc.x", now=10.0) is None


def test_a_new_link_holds_every_subject_until_its_full_set_arrives() -> None:
    book = SettleBook(3.0)
    book.linked("c2", now=10.0)
    assert book.until("svc.anything", now=11.0) == 13.0
    book.announced("c2")
    assert book.until("svc.anything", now=11.0) is None


def test_a_lost_peer_holds_only_its_subjects_and_only_for_the_grace() -> None:
    book = SettleBook(3.0)
    book.lost("e1", ["svc.*", "events.>"], now=10.0)
    assert book.until("svc.edge", now=10.5) == 13.0
    assert book.until("events.a.b", now=10.5) == 13.0
    assert book.until("other.subject", now=10.5) is None
    assert book.until("svc.edge", now=13.0) is None  # grace over (and forgotten)
    book.lost("e1", ["svc.*"], now=20.0)
    book.announced("e1")  # it came back: its full set is what counts now
    assert book.until("svc.edge", now=20.5) is None


def test_a_peer_lost_without_interest_holds_nothing() -> None:
    book = SettleBook(3.0)
    book.linked("c2", now=10.0)
    book.lost("c2", [], now=10.5)
    assert book.until("svc.x", now=11.0) is None


def test_an_edge_without_hub_holds_until_it_has_one_or_the_grace_ends() -> None:
    book = SettleBook(2.0)
    book.hub_lost(now=5.0)
    assert book.until("svc.cloud", now=6.0) == 7.0
    assert book.until("svc.cloud", now=7.5) is None
    book.hub_lost(now=8.0)
    book.hub_found()
    assert book.until("svc.cloud", now=8.5) is None


def test_the_latest_reason_wins_and_lost_peers_are_bounded() -> None:
    book = SettleBook(3.0)
    book.lost("a", ["svc.x"], now=10.0)
    book.linked("b", now=11.0)
    assert book.until("svc.x", now=11.5) == 14.0
    for i in range(1000):
        book.lost(f"p{i}", ["svc.y"], now=20.0)
    assert len(book._lost) <= 256
    assert book.until("svc.y", now=21.0) == 23.0


def test_a_tally_remembers_that_a_peer_was_lost_not_that_it_said_none() -> None:
    # A request is held (and routed again) only when every peer said "none"; one counted as
    # none because it died may have delivered it.
    from fabric.mesh._tally import TallyBook

    book: TallyBook[str] = TallyBook()
    c = book.open("req", 1, 0, {"a", "b"}, deadline=10.0)
    assert book.peer_lost("a") == []
    done = book.answer("b", c, 0)
    assert done is not None and done.total == 0 and done.peer_lost
    c2 = book.open("req", 2, 0, {"a"}, deadline=10.0)
    clean = book.answer("a", c2, 0)
    assert clean is not None and not clean.peer_lost

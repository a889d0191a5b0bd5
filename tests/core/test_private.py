"""Sans-I/O rules of private inboxes (fabric/private.py), the router's inbox filter and the
frame decoder's memory budget (fabric/framing.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.auth import Authorizer, Permissions, Rules
from fabric.errors import PayloadTooLarge, RemoteProtocolError
from fabric.framing import FrameDecoder, PendingBudget
from fabric.mesh._tally import TallyBook
from fabric.private import (
    ReplyGrants,
    control_subject,
    inbox_root,
    inbox_token,
    owns_inbox_pattern,
    parse_sender,
)
from fabric.routing import InterestTable


def test_inbox_roots_are_one_token_per_name() -> None:
    assert inbox_token("a.b") != inbox_token("a")
    assert "." not in inbox_token("a.b.c")
    assert inbox_root("planner").startswith("_INBOX.")


@pytest.mark.parametrize(
    ("pattern", "owned"),
    [
        ("{root}", True),
        ("{root}.>", True),
        ("{root}.abc.7", True),
        ("{root}.*", True),
        ("_INBOX.>", False),
        ("_INBOX.*.>", False),
        ("{root}x.>", False),
        ("{other}.>", False),
    ],
)
def test_only_patterns_under_the_own_root_are_owned(pattern: str, owned: bool) -> None:
    root, other = inbox_root("alice"), inbox_root("mallory")
    assert owns_inbox_pattern(root, pattern.format(root=root, other=other)) is owned


def test_replies_never_match_wildcards_that_are_not_inbox_patterns() -> None:
    table = InterestTable()
    root = inbox_root("alice")
    table.add("alice", 0, f"{root}.>")
    # (Inbox patterns outside one's own root never get here: the node refuses the SUB.)
    for sid, pattern in enumerate([">", "*.>", "*.*.*", "*.*.*.*"], start=1):
        table.add("mallory", sid, pattern)
    reply = f"{root}.r1.7"
    assert [s.session for s in table.route(reply).targets] == ["alice"]
    assert [s.session for s in table.matching(reply)] == ["alice"]
    # Ordinary subjects still reach every wildcard.
    assert len(table.route("a.b.c").targets) == 3


def test_grants_expire_are_bounded_and_die_with_the_session() -> None:
    grants = ReplyGrants(per_session=2)
    grants.grant("s", "_INBOX.t.r.1", expires=10.0)
    assert grants.allowed("s", "_INBOX.t.r.1", now=5.0)
    assert not grants.allowed("other", "_INBOX.t.r.1", now=5.0)
    assert not grants.allowed("s", "_INBOX.t.r.2", now=5.0)
    assert not grants.allowed("s", "_INBOX.t.r.1", now=10.5)
    grants.grant("s", "a", 100.0)
    grants.grant("s", "b", 100.0)
    grants.grant("s", "c", 100.0)  # over the cap: "a" goes
    assert not grants.allowed("s", "a", 1.0) and grants.allowed("s", "c", 1.0)
    assert grants.sweep(now=200.0) == 2 and len(grants) == 0
    grants.grant("s", "d", 100.0)
    grants.forget("s")
    assert not grants.allowed("s", "d", 1.0)


def test_sender_names_may_hold_at_signs() -> None:
    assert parse_sender("a@b@node-1") == ("a@b", "node-1")


def test_an_agents_control_subject_is_allowed_whatever_its_permissions() -> None:
    auth = Authorizer({"w": Permissions(subscribe=Rules())}, None)
    auth.check_subscribe("w", control_subject("w"))
    from fabric.errors import NotAuthorized

    with pytest.raises(NotAuthorized):
        auth.check_subscribe("w", control_subject("other"))


def test_tallies_collect_the_names_of_every_node() -> None:
    book: TallyBook[str] = TallyBook()
    corr = book.open("up", 1, 1, {"p1", "p2"}, 10.0, ["a@n0"])
    assert book.answer("p1", corr, 2, ["b@n1", "c@n1"]) is None
    done = book.answer("p2", corr, 0, [])
    assert done is not None and done.total == 3
    assert done.names == ["a@n0", "b@n1", "c@n1"]


@given(
    chunks=st.lists(st.binary(max_size=300), max_size=20),
    limit=st.integers(min_value=0, max_value=2000),
)
def test_decoder_budget_always_equals_what_is_held(chunks: list[bytes], limit: int) -> None:
    budget = PendingBudget(limit)
    decoder = FrameDecoder(1000, budget)
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except (RemoteProtocolError, PayloadTooLarge):
            decoder.reset()
            break
        assert budget.used == decoder.buffered <= limit
    decoder.reset()
    assert budget.used == 0

"""Subject validation and the interest trie, against a brute-force matcher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import InvalidSubject
from fabric.subjects import SubjectTrie, matches, validate_pattern, validate_subject


@pytest.mark.parametrize(
    "bad", ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", ">", "a*", "a.b>", "x\x00"]
)
def test_invalid_literal_subjects(bad: str) -> None:
    with pytest.raises(InvalidSubject):
        validate_subject(bad)


@pytest.mark.parametrize("bad", ["", "a..b", "a.>.b", ">.a", "a.b*", "a.*x", "a\tb"])
def test_invalid_patterns(bad: str) -> None:
    with pytest.raises(InvalidSubject):
        validate_pattern(bad)


@pytest.mark.parametrize("good", ["a", "a.b", "*", ">", "a.*.c", "a.>", "*.*.>", "_INBOX.x.1"])
def test_valid_patterns(good: str) -> None:
    assert validate_pattern(good) == good


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a", False),
        ("a.>", "a.b.c", True),
        (">", "a", True),
        ("*.b", "a.b", True),
        ("*", "a.b", False),
    ],
)
def test_reference_matcher(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


tokens = st.sampled_from(["a", "b", "c", "dd"])
subjects = st.lists(tokens, min_size=1, max_size=4).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(["a", "b", "c", "dd", "*"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        parts[-1] = ">"
    return ".".join(parts)


@settings(max_examples=300)
@given(st.lists(patterns(), max_size=12), st.lists(subjects, min_size=1, max_size=8), st.data())
def test_trie_agrees_with_brute_force(
    pats: list[str], subs: list[str], data: st.DataObject
) -> None:
    trie: SubjectTrie[int] = SubjectTrie(cache_size=4)  # tiny cache: exercise the sweep
    stored = dict(enumerate(pats))
    for value, pattern in stored.items():
        trie.insert(pattern, value)
    removed = data.draw(st.sets(st.sampled_from(sorted(stored)) if stored else st.nothing()))
    for value in removed:
        assert trie.remove(stored[value], value)
        del stored[value]
    for subject in subs * 2:  # twice: second time through the cache
        expected = {v for v, p in stored.items() if matches(p, subject)}
        assert trie.match(subject) == expected
    assert len(trie) == len(stored)


def test_removal_prunes_levels_and_invalidates_cache() -> None:
    trie: SubjectTrie[str] = SubjectTrie()
    trie.insert("_INBOX.abc.>", "x")
    assert trie.match("_INBOX.abc.1") == {"x"}
    assert trie.remove("_INBOX.abc.>", "x")
    assert trie.match("_INBOX.abc.1") == frozenset()
    assert list(trie.patterns()) == []
    assert not trie.remove("_INBOX.abc.>", "x")


def test_match_cache_is_bounded() -> None:
    trie: SubjectTrie[int] = SubjectTrie(cache_size=8)
    trie.insert("a.>", 1)
    for i in range(100):
        trie.match(f"a.{i}")
    assert len(trie._cache) <= 8

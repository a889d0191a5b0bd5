"""Subjects and the interest trie.

A subject is a dotted name (``tasks.summarise``). A pattern may use ``*`` for exactly one token
and ``>`` for one or more trailing tokens, as NATS users know them. Publishing is only allowed
on literal subjects.

``SubjectTrie`` maps patterns to values and answers "who is interested in this literal
subject". It is a trie of levels with dedicated slots for ``*`` and ``>`` (nats-server's
sublist design), plus a bounded match cache that a generation counter invalidates. It owns no
I/O and takes no locks: the node runs it on one event loop.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from .errors import InvalidSubject

__all__ = [
    "SubjectTrie",
    "is_literal",
    "matches",
    "validate_pattern",
    "validate_subject",
]

V = TypeVar("V", bound=Hashable)

MAX_SUBJECT_LENGTH = 1024
_FORBIDDEN = frozenset(" \t\r\n\x00")


def _tokens(subject: str, *, allow_wildcards: bool) -> list[str]:
    if not subject:
        raise InvalidSubject("subject is empty", subject=subject)
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidSubject(f"subject longer than {MAX_SUBJECT_LENGTH}", subject=subject[:64])
    tokens = subject.split(".")
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if not token:
            raise InvalidSubject("subject has an empty token", subject=subject)
        if _FORBIDDEN.intersection(token):
            raise InvalidSubject("subject contains whitespace or NUL", subject=subject)
        if token in ("*", ">"):
            if not allow_wildcards:
                raise InvalidSubject("wildcards are not allowed here", subject=subject)
            if token == ">" and i != last:
                raise InvalidSubject("'>' must be the last token", subject=subject)
        elif "*" in token or ">" in token:
            raise InvalidSubject("a wildcard must be a whole token", subject=subject)
    return tokens


def validate_subject(subject: str) -> str:
    """Check a literal subject (what one publishes to).

    Raises:
        InvalidSubject: empty, empty token, whitespace, or a wildcard.
    """
    _tokens(subject, allow_wildcards=False)
    return subject


def validate_pattern(pattern: str) -> str:
    """Check a subscription pattern (wildcards allowed as whole tokens, ``>`` last).

    Raises:
        InvalidSubject: when the pattern is malformed.
    """
    _tokens(pattern, allow_wildcards=True)
    return pattern


def is_literal(pattern: str) -> bool:
    """True when the (valid) pattern has no wildcard token."""
    return not any(t in ("*", ">") for t in pattern.split("."))


def matches(pattern: str, subject: str) -> bool:
    """Whether a valid pattern matches a valid literal subject (the reference definition)."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token != "*" and token != s[i]:
            return False
    return len(p) == len(s)


class _Level(Generic[V]):
    __slots__ = ("children", "full_wildcard", "one_wildcard", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Level[V]] = {}
        self.one_wildcard: _Level[V] | None = None
        #: Values of patterns ending in ``>`` at this depth.
        self.full_wildcard: set[V] = set()
        #: Values of patterns ending exactly here.
        self.values: set[V] = set()

    def is_empty(self) -> bool:
        return (
            not self.children
            and self.one_wildcard is None
            and not self.full_wildcard
            and not self.values
        )


class SubjectTrie(Generic[V]):
    """Patterns → values, with "all values whose pattern matches this subject" lookups.

    ``insert`` and ``remove`` take a pattern and a value; a value may sit under many patterns
    and a pattern may hold many values. ``match`` returns a frozenset, cached: up to
    ``cache_size`` subjects, swept back to half when full (nats-server does 1,024 → 512).
    """

    def __init__(self, cache_size: int = 1024) -> None:
        self._root: _Level[V] = _Level()
        self._cache: dict[str, frozenset[V]] = {}
        self._cache_size = cache_size
        self._count = 0
        #: Bumped by every change; lets holders of derived data know they are stale.
        self.generation = 0

    def __len__(self) -> int:
        return self._count

    def insert(self, pattern: str, value: V) -> None:
        """Add ``value`` under ``pattern``.

        Raises:
            InvalidSubject: when the pattern is malformed.
        """
        tokens = _tokens(pattern, allow_wildcards=True)
        level = self._root
        for token in tokens[:-1]:
            level = self._child(level, token)
        last = tokens[-1]
        if last == ">":
            bucket = level.full_wildcard
        else:
            bucket = self._child(level, last).values
        if value not in bucket:
            bucket.add(value)
            self._count += 1
            self._changed()

    def remove(self, pattern: str, value: V) -> bool:
        """Remove ``value`` from ``pattern``; returns whether it was there. Prunes empty levels.

        Raises:
            InvalidSubject: when the pattern is malformed.
        """
        tokens = _tokens(pattern, allow_wildcards=True)
        path: list[tuple[_Level[V], str]] = []
        level = self._root
        for token in tokens[:-1]:
            nxt = self._lookup_child(level, token)
            if nxt is None:
                return False
            path.append((level, token))
            level = nxt
        last = tokens[-1]
        if last == ">":
            bucket = level.full_wildcard
        else:
            leaf = self._lookup_child(level, last)
            if leaf is None:
                return False
            path.append((level, last))
            level = leaf
            bucket = leaf.values
        if value not in bucket:
            return False
        bucket.discard(value)
        self._count -= 1
        # Prune from the deepest level up so a churn of unique inboxes leaves no garbage.
        for parent, token in reversed(path):
            child = self._lookup_child(parent, token)
            if child is None or not child.is_empty():
                break
            if token == "*":
                parent.one_wildcard = None
            else:
                del parent.children[token]
        self._changed()
        return True

    def match(self, subject: str, *, cache: bool = True) -> frozenset[V]:
        """Every value whose pattern matches the literal ``subject`` (validated by the caller).

        Pass ``cache=False`` for subjects used once (reply inboxes), so they do not evict the
        hot ones.
        """
        hit = self._cache.get(subject)
        if hit is not None:
            return hit
        found: set[V] = set()
        self._collect(self._root, subject.split("."), 0, found)
        result = frozenset(found)
        if not cache:
            return result
        if len(self._cache) >= self._cache_size:
            # Sweep to half rather than clearing: hot subjects survive a burst of cold ones.
            for key in list(self._cache)[: self._cache_size // 2]:
                del self._cache[key]
        self._cache[subject] = result
        return result

    def patterns(self) -> Iterator[tuple[str, frozenset[V]]]:
        """Every stored pattern with its values (for interest summaries and debugging)."""
        yield from self._walk(self._root, [])

    # -- internals ------------------------------------------------------------------------

    def _changed(self) -> None:
        self.generation += 1
        self._cache.clear()

    @staticmethod
    def _child(level: _Level[V], token: str) -> _Level[V]:
        if token == "*":
            if level.one_wildcard is None:
                level.one_wildcard = _Level()
            return level.one_wildcard
        child = level.children.get(token)
        if child is None:
            child = level.children[token] = _Level()
        return child

    @staticmethod
    def _lookup_child(level: _Level[V], token: str) -> _Level[V] | None:
        if token == "*":
            return level.one_wildcard
        return level.children.get(token)

    def _collect(self, level: _Level[V], tokens: list[str], i: int, out: set[V]) -> None:
        # ``>`` at this level matches one or more remaining tokens.
        if level.full_wildcard:
            out.update(level.full_wildcard)
        token = tokens[i]
        last = i == len(tokens) - 1
        for child in (level.children.get(token), level.one_wildcard):
            if child is None:
                continue
            if last:
                out.update(child.values)
            else:
                self._collect(child, tokens, i + 1, out)

    def _walk(self, level: _Level[V], prefix: list[str]) -> Iterator[tuple[str, frozenset[V]]]:
        if level.full_wildcard:
            yield ".".join([*prefix, ">"]), frozenset(level.full_wildcard)
        if level.values and prefix:
            yield ".".join(prefix), frozenset(level.values)
        for token, child in level.children.items():
            yield from self._walk(child, [*prefix, token])
        if level.one_wildcard is not None:
            yield from self._walk(level.one_wildcard, [*prefix, "*"])

"""The node's interest table: who gets a message published on a subject.

Pure bookkeeping, no I/O. Every plain subscription whose pattern matches receives the message;
each queue group (same pattern, same queue name) receives it once, on one member. Which member
is decided by a ``Placement`` policy — round-robin among the best-ranked members, so "nearest
first" is one ranking function away (the mesh ranks same node, then same site, then round
trip).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from .protocol import INBOX_PREFIX
from .subjects import SubjectTrie, validate_pattern

__all__ = ["INBOX_PREFIX", "InterestTable", "Route", "Subscription"]



@dataclass(frozen=True, slots=True)
class Subscription:
    """One agent subscription as the node sees it."""

    #: The session (agent connection) that owns it; opaque to the table.
    session: Hashable
    #: The agent's id for this subscription, echoed on every delivery.
    sid: int
    pattern: str
    #: Queue group name; "" for a plain subscription.
    queue: str = ""


@dataclass(slots=True)
class Route:
    """Where one message goes: every plain subscriber, and one member per queue group."""

    targets: list[Subscription] = field(default_factory=list)


#: Ranks queue members for a message: lower is better. Default: all equal.
Ranker = Callable[[Subscription], float]


class InterestTable:
    """Subscriptions by session and sid, matched through a ``SubjectTrie``."""

    def __init__(self, cache_size: int = 1024) -> None:
        self._trie: SubjectTrie[Subscription] = SubjectTrie(cache_size)
        self._by_session: dict[Hashable, dict[int, Subscription]] = {}
        # Round-robin cursor per queue group, so members share load evenly.
        self._cursor: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._trie)

    @property
    def generation(self) -> int:
        """Changes whenever interest changes (the mesh uses it to know when to re-announce)."""
        return self._trie.generation

    def add(self, session: Hashable, sid: int, pattern: str, queue: str = "") -> Subscription:
        """Register a subscription; replaces an earlier one with the same ``(session, sid)``.

        Raises:
            InvalidSubject: when the pattern is malformed.
        """
        validate_pattern(pattern)
        sub = Subscription(session, sid, pattern, queue)
        subs = self._by_session.setdefault(session, {})
        old = subs.get(sid)
        if old is not None:
            self._trie.remove(old.pattern, old)
        subs[sid] = sub
        self._trie.insert(pattern, sub)
        return sub

    def remove(self, session: Hashable, sid: int) -> Subscription | None:
        """Drop one subscription; returns it, or None when it did not exist."""
        subs = self._by_session.get(session)
        if not subs or sid not in subs:
            return None
        sub = subs.pop(sid)
        self._trie.remove(sub.pattern, sub)
        if not subs:
            del self._by_session[session]
        return sub

    def drop_session(self, session: Hashable) -> list[Subscription]:
        """Drop everything a session had (it disconnected or stopped answering heartbeats)."""
        subs = self._by_session.pop(session, {})
        for sub in subs.values():
            self._trie.remove(sub.pattern, sub)
        return list(subs.values())

    def subscriptions(self, session: Hashable) -> list[Subscription]:
        """The session's subscriptions, in sid order."""
        return sorted(self._by_session.get(session, {}).values(), key=lambda s: s.sid)

    def all(self) -> Iterable[Subscription]:
        """Every subscription (for interest summaries)."""
        for subs in self._by_session.values():
            yield from subs.values()

    def matching(self, subject: str) -> frozenset[Subscription]:
        """Every subscription matching ``subject``, every queue member included."""
        if subject.startswith(INBOX_PREFIX):
            return frozenset(_inbox_owners(self._trie.match(subject, cache=False)))
        return self._trie.match(subject)

    def route(self, subject: str, rank: Ranker | None = None) -> Route:
        """Who receives a message on the literal ``subject`` (validated by the caller).

        A reply subject (``_INBOX.``) reaches only subscriptions made under ``_INBOX.``, never
        a wildcard such as ``>`` (fabric/private.py: only the owner reads its inbox).
        """
        inbox = subject.startswith(INBOX_PREFIX)
        matched: Iterable[Subscription] = self._trie.match(subject, cache=not inbox)
        route = Route()
        if not matched:
            return route
        if inbox:
            matched = _inbox_owners(matched)
        groups: dict[tuple[str, str], list[Subscription]] | None = None
        for sub in matched:
            if not sub.queue:
                route.targets.append(sub)
                continue
            if groups is None:
                groups = {}
            groups.setdefault((sub.pattern, sub.queue), []).append(sub)
        if groups:
            for key, members in groups.items():
                route.targets.append(self._pick(key, members, rank))
        return route

    def _pick(
        self, key: tuple[str, str], members: list[Subscription], rank: Ranker | None
    ) -> Subscription:
        if rank is not None and len(members) > 1:
            scores = [rank(m) for m in members]
            best = min(scores)
            members = [m for m, s in zip(members, scores, strict=True) if s == best]
        if len(members) == 1:
            return members[0]
        # frozenset order is arbitrary; sort so the cursor walks a stable sequence.
        members.sort(key=lambda s: (str(s.session), s.sid))
        n = self._cursor.get(key, 0)
        self._cursor[key] = n + 1
        return members[n % len(members)]


def _inbox_owners(matched: Iterable[Subscription]) -> list[Subscription]:
    return [sub for sub in matched if sub.pattern.startswith(INBOX_PREFIX)]

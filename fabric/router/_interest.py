"""Interest across the mesh: what peers told us, and what we tell each peer. Pure, no I/O.

An interest key is ``(pattern, queue, labels)``; labels matter for queue members only (they
carry the member's site and declared labels, so a remote node can honour ``prefer=``). Local
interest is counted (several agents may share a key); a peer's interest is a set (the peer
already aggregated its own). What a peer is told is the union of the sources the strategy
exports to it, and only presence changes travel: a key is announced when the first source
gains it and withdrawn when the last one loses it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..subjects import SubjectTrie
from ._strategy import PeerKind, Strategy

__all__ = ["Delta", "InterestKey", "Labels", "MeshInterest", "RemoteEntry"]

Labels = tuple[tuple[str, str], ...]
InterestKey = tuple[str, str, Labels]


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One key a peer announced."""

    peer: str
    pattern: str
    queue: str
    labels: Labels


@dataclass(slots=True)
class Delta:
    """Keys to announce to (add) or withdraw from (remove) one peer."""

    add: set[InterestKey] = field(default_factory=set)
    remove: set[InterestKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


class MeshInterest:
    """Local interest counts, peers' announced keys, and what each peer has been told."""

    def __init__(self, strategy: Strategy) -> None:
        self._strategy = strategy
        self.local: Counter[InterestKey] = Counter()
        self._kinds: dict[str, PeerKind] = {}
        self._remote: dict[str, set[InterestKey]] = {}
        self._announced: dict[str, set[InterestKey]] = {}
        self._pending: dict[str, Delta] = {}
        #: Every peer's keys, matched against subjects when forwarding.
        self.trie: SubjectTrie[RemoteEntry] = SubjectTrie()

    # -- peers --------------------------------------------------------------------------

    @property
    def peers(self) -> dict[str, PeerKind]:
        return dict(self._kinds)

    def remote_keys(self, peer: str) -> set[InterestKey]:
        return set(self._remote.get(peer, ()))

    def peer_up(self, peer: str, kind: PeerKind) -> set[InterestKey]:
        """A peer link came up; returns the full key set to send it first."""
        self._kinds[peer] = kind
        self._remote.setdefault(peer, set())
        full = {k for k in self._candidates(peer) if self._present_for(peer, k)}
        self._announced[peer] = set(full)
        self._pending.pop(peer, None)
        return full

    def peer_down(self, peer: str) -> None:
        """A peer is gone: forget what it announced (and withdraw it from the others)."""
        keys = self._remote.pop(peer, set())
        kind = self._kinds.pop(peer, None)
        self._announced.pop(peer, None)
        self._pending.pop(peer, None)
        for key in keys:
            self.trie.remove(key[0], RemoteEntry(peer, *key))
        if kind is not None:
            for key in keys:
                self._changed(key, kind, peer)

    def peer_replace(self, peer: str, keys: Iterable[InterestKey]) -> None:
        """The peer sent its full set (first message on a link)."""
        new = set(keys)
        old = self._remote.get(peer, set())
        self.peer_delta(peer, new - old, old - new)

    def peer_delta(
        self, peer: str, add: Iterable[InterestKey], remove: Iterable[InterestKey]
    ) -> None:
        """The peer announced and withdrew keys."""
        kind = self._kinds.get(peer)
        if kind is None:
            return
        held = self._remote[peer]
        for key in remove:
            if key in held:
                held.discard(key)
                self.trie.remove(key[0], RemoteEntry(peer, *key))
                self._changed(key, kind, peer)
        for key in add:
            if key not in held:
                held.add(key)
                self.trie.insert(key[0], RemoteEntry(peer, *key))
                self._changed(key, kind, peer)

    # -- local --------------------------------------------------------------------------

    def local_add(self, key: InterestKey) -> None:
        self.local[key] += 1
        if self.local[key] == 1:
            self._changed(key, None, None)

    def local_remove(self, key: InterestKey) -> None:
        n = self.local.get(key, 0)
        if n <= 1:
            self.local.pop(key, None)
            if n == 1:
                self._changed(key, None, None)
        else:
            self.local[key] = n - 1

    # -- announcements ------------------------------------------------------------------

    def take_deltas(self) -> dict[str, Delta]:
        """What to send each peer now; clears the pending set."""
        out = {p: d for p, d in self._pending.items() if d}
        self._pending = {}
        return out

    def _changed(self, key: InterestKey, source: PeerKind | None, source_peer: str | None) -> None:
        for target, kind in self._kinds.items():
            if target == source_peer or not self._strategy.exports(source, kind):
                continue
            present = self._present_for(target, key)
            told = self._announced[target]
            if present == (key in told):
                continue
            delta = self._pending.setdefault(target, Delta())
            if present:
                told.add(key)
                if key in delta.remove:
                    delta.remove.discard(key)
                else:
                    delta.add.add(key)
            else:
                told.discard(key)
                if key in delta.add:
                    delta.add.discard(key)
                else:
                    delta.remove.add(key)

    def _present_for(self, target: str, key: InterestKey) -> bool:
        kind = self._kinds[target]
        if self.local.get(key, 0) > 0 and self._strategy.exports(None, kind):
            return True
        for peer, keys in self._remote.items():
            if peer != target and key in keys and self._strategy.exports(self._kinds[peer], kind):
                return True
        return False

    def _candidates(self, target: str) -> set[InterestKey]:
        keys = set(self.local)
        for peer, held in self._remote.items():
            if peer != target:
                keys |= held
        return keys

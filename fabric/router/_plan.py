"""Where one message goes: local subscribers, which peers get a copy, and which peer serves
each queue group. Pure; the mesh driver feeds it the matches and peer facts.

Placement of a queue group, best first:
1. members whose labels satisfy the requester's ``prefer=`` (fewest mismatches);
2. a member on this node;
3. a member at this node's site;
4. the peer with the lowest measured round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..protocol import PREFER_HEADER
from ..routing import Subscription
from ._interest import Labels, RemoteEntry

__all__ = [
    "PREFER_HEADER",
    "GroupKey",
    "Plan",
    "decode_groups",
    "decode_prefer",
    "encode_groups",
    "mismatch",
    "plan_route",
]

GroupKey = tuple[str, str]


@dataclass(slots=True)
class Plan:
    """The result of planning one message."""

    #: Local subscriptions to deliver to.
    local: list[Subscription] = field(default_factory=list)
    #: Peer name -> queue groups that peer must serve (empty list: plain interest only).
    peers: dict[str, list[GroupKey]] = field(default_factory=dict)


def decode_prefer(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The ``prefer=`` labels a requester attached (empty when none or malformed)."""
    if not headers:
        return {}
    raw = headers.get(PREFER_HEADER)
    if not raw:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(","):
        k, sep, v = item.partition("=")
        if sep and k:
            out[k.strip()] = v.strip()
    return out


def mismatch(prefer: Mapping[str, str], labels: Mapping[str, str] | Labels) -> int:
    """How many preferred labels a member lacks."""
    if not prefer:
        return 0
    have = dict(labels)
    return sum(1 for k, v in prefer.items() if have.get(k) != v)


def encode_groups(groups: Iterable[GroupKey]) -> str:
    """Queue groups a peer must serve, in the header's ``queue`` field: ``pattern queue`` per
    line (patterns cannot hold whitespace, so the first space splits)."""
    return "\n".join(f"{p} {q}" for p, q in groups)


def decode_groups(text: str) -> set[GroupKey]:
    """Inverse of ``encode_groups``; malformed lines are ignored."""
    out: set[GroupKey] = set()
    if not text:
        return out
    for line in text.split("\n"):
        p, sep, q = line.partition(" ")
        if sep and p and q:
            out.add((p, q))
    return out


def plan_route(
    local_targets: Iterable[Subscription],
    remote: Iterable[RemoteEntry],
    *,
    may_send: Callable[[str], bool],
    only_groups: set[GroupKey] | None,
    prefer: Mapping[str, str],
    local_labels: Callable[[Subscription], Mapping[str, str]],
    site: str,
    rtt: Callable[[str], float],
) -> Plan:
    """Plan one message.

    ``local_targets`` is the interest table's route (one chosen member per local group);
    ``remote`` the peers' keys matching the subject; ``may_send(peer)`` the strategy's verdict
    for this message's origin; ``only_groups`` restricts queue groups to those an upstream
    peer assigned (None: every group).
    """
    plan = Plan()
    local_groups: dict[GroupKey, Subscription] = {}
    for sub in local_targets:
        if not sub.queue:
            plan.local.append(sub)
            continue
        key = (sub.pattern, sub.queue)
        if only_groups is None or key in only_groups:
            local_groups[key] = sub

    # Best remote member per (group, peer), and plain interest per peer.
    remote_groups: dict[GroupKey, dict[str, tuple[int, int]]] = {}
    for entry in remote:
        if not may_send(entry.peer):
            continue
        if not entry.queue:
            plan.peers.setdefault(entry.peer, [])
            continue
        key = (entry.pattern, entry.queue)
        if only_groups is not None and key not in only_groups:
            continue
        labels = dict(entry.labels)
        score = (mismatch(prefer, labels), 1 if labels.get("site") == site else 2)
        per_peer = remote_groups.setdefault(key, {})
        if entry.peer not in per_peer or score < per_peer[entry.peer]:
            per_peer[entry.peer] = score

    for key in local_groups.keys() | remote_groups.keys():
        best: tuple[int, int, float, str] | None = None
        local = local_groups.get(key)
        if local is not None:
            best = (mismatch(prefer, local_labels(local)), 0, 0.0, "")
        for peer, (miss, locality) in remote_groups.get(key, {}).items():
            cand = (miss, locality, rtt(peer), peer)
            if best is None or cand < best:
                best = cand
        assert best is not None
        if best[3] == "":
            assert local is not None
            plan.local.append(local)
        else:
            plan.peers.setdefault(best[3], []).append(key)
    return plan

"""Forwarding rules per node role, in one table (the zenoh "hat" idea: one strategy per role).

Everything that decides where a message may travel next lives in ``_FORWARD`` below. Interest
export is derived from the same table, so a node never advertises interest it would not route
to: interest from a source S is announced to a peer T exactly when a message arriving from T
may be forwarded to S.

Roles:
- ``cloud``: member of the full-mesh cluster; may have leaves attached.
- ``edge``: a leaf; one active hub (a cloud node) at a time.

The loop-free rule, by construction: a message that came from a cluster peer is never sent
to another cluster peer; a leaf never sends back to its hub what came from its hub; and a
message is never sent back on the link it came from. So the longest path is
leaf → hub → cluster peer → leaf, with no cycle possible (docs/mesh.md has the argument;
tests/mesh/test_strategy.py checks it on random topologies).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["LOCAL", "PeerKind", "Role", "Strategy", "strategy_for"]


class PeerKind(Enum):
    """What a peer link is, seen from this node."""

    CLUSTER = "cluster"  #: another cloud node of the full mesh
    LEAF = "leaf"  #: an edge node attached to this (cloud) node
    HUB = "hub"  #: the cloud node this (edge) node is attached to

    # Looked up per forwarded message (``may_forward``): identity hash in C, not Enum's Python.
    __hash__ = object.__hash__


class Role(Enum):
    CLOUD = "cloud"
    EDGE = "edge"

    __hash__ = object.__hash__  # as PeerKind's


#: Stands for "an agent on this node" where a message's origin or interest's source is asked.
LOCAL: None = None

Origin = PeerKind | None

# (role, origin kind) -> kinds of peer links the message may be forwarded to. A message is
# never sent back on the link it arrived on, whatever the table says.
_FORWARD: dict[tuple[Role, Origin], frozenset[PeerKind]] = {
    (Role.CLOUD, LOCAL): frozenset({PeerKind.CLUSTER, PeerKind.LEAF}),
    (Role.CLOUD, PeerKind.LEAF): frozenset({PeerKind.CLUSTER, PeerKind.LEAF}),
    (Role.CLOUD, PeerKind.CLUSTER): frozenset({PeerKind.LEAF}),
    (Role.CLOUD, PeerKind.HUB): frozenset(),  # a cloud node has no hub
    (Role.EDGE, LOCAL): frozenset({PeerKind.HUB}),
    (Role.EDGE, PeerKind.HUB): frozenset(),
    (Role.EDGE, PeerKind.LEAF): frozenset(),  # edges take no leaves
    (Role.EDGE, PeerKind.CLUSTER): frozenset(),  # edges are not cluster members
}

# Which peer kinds a node of this role accepts on its listener, and as what.
_ACCEPTS: dict[Role, dict[Role, PeerKind]] = {
    Role.CLOUD: {Role.CLOUD: PeerKind.CLUSTER, Role.EDGE: PeerKind.LEAF},
    Role.EDGE: {},
}


class Strategy:
    """The forwarding and interest-export rules of one role. Pure; no state."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def may_forward(self, origin: Origin, to: PeerKind) -> bool:
        """May a message that arrived from ``origin`` (None: a local agent) go to ``to``?"""
        return to in _FORWARD[(self.role, origin)]

    def exports(self, source: Origin, to: PeerKind) -> bool:
        """Is interest held by ``source`` (None: local agents) announced to peer kind ``to``?"""
        if source is None:
            return to in _FORWARD[(self.role, None)]
        return source in _FORWARD[(self.role, to)]

    def accepts(self, remote_role: Role) -> PeerKind | None:
        """The kind an inbound link from a node of ``remote_role`` gets, or None (refuse)."""
        return _ACCEPTS[self.role].get(remote_role)


def strategy_for(role: Role) -> Strategy:
    """The strategy of a node role."""
    return Strategy(role)

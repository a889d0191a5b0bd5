"""The port between the mesh and the node it serves: what the mesh may ask of its host.

The mesh owns peer links; the router (``fabric.router``) decides; the node carries out what
concerns its agents. The mesh reaches the node only through this, never through its privates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from ..framing import PendingBudget
from ..router import Action, PeerOrigin, Router
from ..wire import Header

__all__ = ["MeshHost"]


class MeshHost(Protocol):
    """A node, as its mesh sees it (``fabric.node.Node`` is one)."""

    #: The node's router: peer events go in, actions come out.
    router: Router
    #: Bytes of partial incoming frames, shared by every stream listener of the node.
    pending: PendingBudget

    #: Monotonic seconds, the clock every routing deadline is read on.
    clock: Callable[[], float]

    @property
    def metrics_url(self) -> str | None:
        """Where the node's monitoring port answers, announced to peers (``fabric top``)."""
        ...

    def run(self, actions: Iterable[Action]) -> None:
        """Carry out the router's actions (STATUS to agents, copies and counts to peers)."""

    def publish_from_peer(self, origin: PeerOrigin, header: Header, payload: memoryview) -> None:
        """Route a message a peer forwarded, with ``origin`` as its sender."""

"""Direct paths across hosts, the node's part: keys, grants, and resolving across the mesh.

An agent that may be reached from other hosts listens on TCP too and says where at HELLO
(``direct_tcp``); its node answers with the key it will sign that agent's grants with
(``WelcomeKey.GRANT_KEY``, derived from a secret of this node process and the address,
fabric/grants.py). A requester asks its node ``$node.resolve`` with ``remote``; when peers
have interest, the node asks each of them (``fabric/mesh/_direct.py``), and each answers with
its responders' addresses and a grant it signed for that requester and subject, valid
``direct_grant_ttl`` seconds. Any responder that cannot be reached so (no TCP, an older
peer, no answer in time) makes the whole answer "not direct": the request goes through the
mesh, as before.

Permissions: the requester's node checks that the requester may publish on the subject
before anything is asked (``resolve``); refused, no grant is ever issued.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

from .grants import Grant, responder_key, sign
from .protocol import DirectTarget, ResolveAnswer

if TYPE_CHECKING:
    from .node import Node
    from .session import Session

__all__ = ["GrantIssuer", "resolve_across"]

#: Longest a node waits for its peers' answers before saying "not direct".
_ASK_BUDGET = 2.0


class GrantIssuer:
    """This node's secret, the keys derived from it, and the grants it signs."""

    def __init__(self, ttl: float) -> None:
        self._secret = secrets.token_bytes(32)
        self.ttl = ttl

    def key_for(self, session: Session) -> bytes:
        return responder_key(self._secret, session.direct_tcp, session.id)

    def welcome_key(self, session: Session) -> str | None:
        """The key for an agent that listens on TCP, hex (None for others)."""
        return self.key_for(session).hex() if session.direct_tcp else None

    def local_targets(
        self, node: Node, asker: str, subject: str, requester: str
    ) -> list[DirectTarget] | None:
        """This node's responders for ``subject``, each with a grant for ``requester``; None
        when one of them has no TCP address or the subject would go on to other peers."""
        targets = []
        expires = time.time() + self.ttl
        for sub in node.interest.matching(subject):
            bound = node._links.get(sub.session)
            if bound is None:
                continue
            address = bound.session.direct_tcp
            if not address:
                return None
            group = f"{sub.pattern} {sub.queue}" if sub.queue else ""
            key = self.key_for(bound.session)
            token = sign(Grant(requester, subject, address, expires), key)
            name = bound.session.name
            targets.append(DirectTarget(address, sub.sid, group, name, token, node.settings.name))
        if _forwards_onward(node, subject, asker):
            return None
        node.stats.grants_issued += len(targets)
        return targets


def _forwards_onward(node: Node, subject: str, asker: str) -> bool:
    """Would a message from ``asker`` on ``subject`` go on from here to another peer? Then
    responders beyond this node are out of this answer's sight: not direct."""
    kinds = node.router.peers
    origin = kinds.get(asker)
    if origin is None:
        return True
    strategy = node.router.strategy
    for entry in node.router.remote.trie.match(subject, cache=False):
        to = kinds.get(entry.peer)
        if entry.peer != asker and to is not None and strategy.may_forward(origin, to):
            return True
    return False


def _peers_with_interest(node: Node, subject: str) -> set[str]:
    kinds = node.router.peers
    strategy = node.router.strategy
    peers = set()
    for entry in node.router.remote.trie.match(subject, cache=False):
        kind = kinds.get(entry.peer)
        if kind is not None and strategy.may_forward(None, kind):
            peers.add(entry.peer)
    return peers


async def resolve_across(
    node: Node, requester: str, subject: str, local: list[DirectTarget], budget: float
) -> ResolveAnswer:
    """The directory's answer when peers have interest: local targets plus every peer's."""
    mesh = node.mesh
    if mesh is None:
        return ResolveAnswer(direct=False)
    budget = min(budget, _ASK_BUDGET)
    targets = list(local)
    peers = sorted(_peers_with_interest(node, subject))
    answers = await asyncio.gather(
        *(mesh.directory.ask(peer, subject, requester, budget) for peer in peers)
    )
    for found in answers:
        if found is None:
            return ResolveAnswer(direct=False)
        targets.extend(found)
    node.stats.remote_resolves += 1
    return ResolveAnswer(direct=True, targets=tuple(targets))

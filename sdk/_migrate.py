"""``agent.migrate(to=...)``: move an agent to another node without losing a message.

The steps, each waiting on an answer from a node, never on a timer (docs/migration.md):

1. hold: the old node queues this agent's deliveries instead of sending them;
2. attach: dial the new node, have it hold too, subscribe there, and wait for a mesh
   barrier so every peer knows the new interest;
3. state: take the leases over on the new node (a larger fencing token fences the old
   instance); when the two nodes serve different state stores, carry the leased keys over
   with their versions and fencing floors;
4. detach: unsubscribe at the old node and wait for its barrier, after which no peer
   forwards anything more to it;
5. drain: the old node sends what it held (in order), then the new node, after a barrier
   of its own, sends what it held; a message both held is delivered once (same subject and
   message id), and the new link becomes the agent's link.

A failure before step 4 puts everything back on the old node (``MigrationFailed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fabric.errors import FabricError, MigrationFailed
from fabric.protocol import (
    AGENT_HOLD,
    AGENT_RELEASE,
    NODE_BARRIER,
    Header,
    Kind,
    WelcomeKey,
)

from ._dial import parse_urls
from ._handover import carry_state

if TYPE_CHECKING:
    from ._connection import Connection
    from ._core import AgentCore
    from ._state import LeaseBook

__all__ = ["MigrationReport", "migrate"]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a migration did."""

    #: Node the agent is on now.
    node: str
    #: Seconds from the first step to the agent running on the new node.
    elapsed: float
    #: Leased keys whose state was carried to a different store (0 when shared).
    keys_moved: int
    #: Bytes of state carried over.
    bytes_moved: int
    #: Messages both nodes held and that were delivered once.
    duplicates_dropped: int


async def migrate(
    core: AgentCore, leases: LeaseBook, to: str, *, timeout: float = 30.0
) -> MigrationReport:
    """See ``Agent.migrate``."""
    started = time.monotonic()
    deadline = started + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MigrationFailed("migration ran out of time")
        return remaining

    old = core.conn
    seen: set[tuple[str, int]] = set()
    dropped = 0

    def from_old(header: Header) -> bool:
        seen.add((header.subject, header.msg_id))
        return True

    def from_new(header: Header) -> bool:
        nonlocal dropped
        if (header.subject, header.msg_id) in seen:
            dropped += 1
            return False
        return True

    try:
        await old.call(AGENT_HOLD.subject, timeout=left())
    except FabricError as exc:
        raise MigrationFailed(f"the old node would not hold deliveries: {exc}") from None
    old.admit(from_old)
    new = core.new_connection(parse_urls(to))
    new.admit(from_new)
    detached = False
    try:
        await new.open()
        await new.call(AGENT_HOLD.subject, timeout=left())
        for header in core.subscription_frames():
            new.send(header)
        await new.call(NODE_BARRIER.subject, timeout=left())
        moved, moved_bytes = await _hand_over_state(leases, old, new, left)
        for header in core.subscription_frames():
            old.send(Header(Kind.UNSUB, subject=header.subject, sid=header.sid))
        detached = True
        await old.call(NODE_BARRIER.subject, timeout=left())
        await old.call(AGENT_RELEASE.subject, timeout=left())
        await new.call(NODE_BARRIER.subject, timeout=left())
        core.switch_connection(new)
        await new.call(AGENT_RELEASE.subject, timeout=left())
    except (FabricError, TimeoutError) as exc:
        await new.aclose()
        old.admit(None)
        if not detached:
            try:
                await old.call(AGENT_RELEASE.subject, timeout=5.0)
            except FabricError:
                pass  # the old link is gone too: its reconnect restores the subscriptions
        raise MigrationFailed(f"migration to {to} failed: {exc}") from None
    finally:
        new.admit(None)
        seen.clear()
    old.admit(None)
    # Requests taken on the old node are answered through it: it routed them, so it is the
    # node that accepts their replies (fabric/private.py). It closes once they are done.
    core.retire(old)
    return MigrationReport(
        node=new.node,
        elapsed=time.monotonic() - started,
        keys_moved=moved,
        bytes_moved=moved_bytes,
        duplicates_dropped=dropped,
    )


async def _hand_over_state(
    leases: LeaseBook, old: Connection, new: Connection, budget: Callable[[], float]
) -> tuple[int, int]:
    """Take every lease the agent holds over on the new node; carry the keys' values when
    the new node serves a different store. Returns (keys moved, bytes moved)."""
    same_store = old.welcome.get(WelcomeKey.STATE) == new.welcome.get(WelcomeKey.STATE)
    moved = moved_bytes = 0
    for lease in leases.held():
        key = lease.key
        if not same_store:
            carried = await carry_state(old, new, key, lease.token, budget)
            if carried is not None:
                moved += 1
                moved_bytes += carried
        ttl = max(1.0, lease.remaining)
        await leases.acquire_on(new, key, ttl, budget())
    return moved, moved_bytes

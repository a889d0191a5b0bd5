"""A publish, from an agent or forwarded by a peer: delivered to the local sessions the
router picks (shared-memory slots included), the rest left to the router to decide."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from . import _node_slow
from .errors import RemoteProtocolError
from .private import GRANT_GRACE_S, GRANT_TTL_S
from .protocol import Flags, Header, encode_msg
from .router import Payload, PeerOrigin
from .routing import INBOX_PREFIX
from .shm import SharedDelivery
from .subjects import validate_subject

if TYPE_CHECKING:
    from .node import Node, _SessionLink


def publish(
    node: Node,
    bound: _SessionLink | PeerOrigin,
    header: Header,
    payload: Payload,
    replay: bool = False,
) -> None:
    subject = header.subject
    stats = node.stats
    stats.messages_in += 1
    stats.bytes_in += len(payload)
    if header.reply:
        stats.requests += 1
    if subject not in node._valid_subjects:
        validate_subject(subject)
        if len(node._valid_subjects) >= 4096:
            node._valid_subjects.clear()  # bounded; refilled by the hot subjects
        if not subject.startswith(INBOX_PREFIX):
            node._valid_subjects.add(subject)
    origin: Hashable = bound if isinstance(bound, PeerOrigin) else bound.session
    router = node.router
    routing = router.route(origin, header)
    links = node._links
    targets = [
        (target, sub.sid) for sub in routing.local if (target := links.get(sub.session)) is not None
    ]
    shared = None
    if header.flags & Flags.SHM:
        if isinstance(bound, PeerOrigin):
            raise RemoteProtocolError("a forwarded message carries no shared-memory slot")
        shared = share(node, bound, header, memoryview(payload), targets)
    reached = 0
    missed: list[_SessionLink] = []
    dropped_before = stats.dropped_slow
    reply = header.reply
    if reply and targets:
        # Each receiver may answer into ``reply`` until the deadline (fabric/private.py).
        expires = node.clock() + (
            header.timeout_ms / 1000 + GRANT_GRACE_S if header.timeout_ms else GRANT_TTL_S
        )
        grant = node.grants.grant
        for target, _ in targets:
            grant(target.session, reply, expires)
    out = b""
    out_sid = -1  # the sid ``out`` was encoded for: agents number alike, so a fan-out
    for target, sid in targets:  # to many agents mostly repeats one (encoded once)
        body: memoryview | bytes = payload
        flags = 0
        if shared is not None:
            body, flags = shared.body_for(target.session)
            out_sid = -1
        if sid != out_sid:
            out = encode_msg(
                subject,
                header.reply,
                header.msg_id,
                header.timeout_ms,
                header.traceparent,
                header.headers,
                sid,
                header.status,
                header.seq,
                flags,
            )
            if shared is None:
                out_sid = sid
        if target.session.held is not None:
            if _node_slow.hold(node, target, out, body, sid):
                reached += 1
            else:
                missed.append(target)
        elif node._send_encoded(target, out, body, sid):
            reached += 1
        else:
            missed.append(target)
            if shared is not None:
                shared.undeliverable(target.session)
    stats.messages_out += reached
    stats.bytes_out += reached * len(payload)
    if node._tracer is not None:
        node._tracer.hop(subject, header.traceparent, reached)
    names = None
    if header.flags & Flags.COUNT:
        # A gather learns who was reached, so it can name who did not answer.
        node_name = node.settings.name
        names = [f"{t.session.name}@{node_name}" for t, _ in targets if t not in missed]
    if not (header.flags or routing.peers):
        return  # a plain publish delivered here: the router has nothing left to decide
    actions = router.routed(
        origin,
        header,
        # Peers get bytes, never a slot of this host's pool (copied only if they get it).
        payload if shared is None or not routing.peers else shared.body_for(None)[0],
        routing,
        reached,
        node.clock(),
        names=names,
        all_behind=stats.dropped_slow > dropped_before,
        replay=replay,
    )
    if actions:
        node.run(actions)
    elif router.timers_moved():
        node._arm()  # a request held (``run`` arms otherwise)


def share(
    node: Node,
    bound: _SessionLink,
    header: Header,
    payload: memoryview,
    targets: list[tuple[_SessionLink, int]],
) -> SharedDelivery:
    """Validate a shared-memory publish and give each local receiver its hold.

    Raises:
        BadDescriptor: the descriptor is not a slot this publisher allocated.
    """
    if node.pool is None:
        raise RemoteProtocolError("this node serves no shared-memory pool")
    receivers = [t.session for t, _ in targets]
    return node.pool.publish(bound.session, payload, receivers, node.settings.max_payload)

"""The control calls an agent makes of its node: statistics, the directory, migration
hold/release/barrier, the shared-memory pool and the state tier.

Each call is one function ``(node, bound, header, payload)``, looked up by the call's
definition (fabric/protocol/_calls.py) in ``HANDLERS``. They use the node's sending and
rejecting (``Node._send``, ``Node._reject``); ``fabric/node.py`` stays the session and frame
driver. A call that waits (a slot, a barrier, the state backend) runs as a task the node owns,
so a slow call never holds up the session's other frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._remote_direct import resolve_across
from .errors import BadDescriptor, FabricError, RemoteProtocolError, Timeout
from .protocol import (
    AGENT_HOLD,
    AGENT_RELEASE,
    NODE_BARRIER,
    NODE_RESOLVE,
    NODE_STATS,
    POOL_ALLOC,
    POOL_RELEASE,
    STATE_CALLS,
    STATE_PREFIX,
    AllocRequest,
    ControlCall,
    DirectTarget,
    Flags,
    Header,
    Kind,
    NodeStatus,
    ResolveAnswer,
    ResolveRequest,
    control_call,
)
from .subjects import validate_subject

if TYPE_CHECKING:
    from .node import Node, _SessionLink

__all__ = ["HANDLERS", "dispatch"]

Handler = Callable[["Node", "_SessionLink", Header, memoryview], None]


def dispatch(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    """Answer one CONTROL frame. An unknown subject, or a call that is not an agent's, is
    ``RemoteProtocolError`` (ERR); the session goes on."""
    call = control_call(header.subject)
    handler = HANDLERS.get(call)
    if handler is None:
        raise RemoteProtocolError(f"{call.subject} is not a call an agent makes")
    handler(node, bound, header, payload)


def _spawn(node: Node, step: Coroutine[Any, Any, None]) -> None:
    # The node cancels these on close.
    task = asyncio.ensure_future(step)
    node._tasks.add(task)
    task.add_done_callback(node._tasks.discard)


def _answer(header: Header, **fields: Any) -> Header:
    return Header(Kind.CONTROL, subject=header.subject, msg_id=header.msg_id, **fields)


# -- $node.stats -------------------------------------------------------------------------


def _stats(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    _, body = NODE_STATS.encode_answer(NodeStatus(node.status()))
    node._send(bound, _answer(header), body)


# -- $node.resolve: the directory --------------------------------------------------------


def _resolve(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    ask = NODE_RESOLVE.decode_request(header.headers)
    local = local_targets(node, bound, ask.subject)
    if local is not None and node.router.remote_interest(ask.subject):
        if ask.remote and node.mesh is not None:
            # Peers serve it too: ask them for their responders and grants (an await).
            budget = header.timeout_ms / 1000 if header.timeout_ms else 2.0
            _spawn(node, _resolve_across(node, bound, header, ask, local, budget))
            return
        local = None
    answer = ResolveAnswer(False) if local is None else ResolveAnswer(True, tuple(local))
    _answer_resolve(node, bound, header, ask, answer)


async def _resolve_across(
    node: Node,
    bound: _SessionLink,
    header: Header,
    ask: ResolveRequest,
    local: list[DirectTarget],
    budget: float,
) -> None:
    answer = await resolve_across(node, bound.session.name, ask.subject, local, budget)
    _answer_resolve(node, bound, header, ask, answer)


def _answer_resolve(
    node: Node, bound: _SessionLink, header: Header, ask: ResolveRequest, answer: ResolveAnswer
) -> None:
    node.stats.directory_lookups += 1
    if node._tracer is not None:
        span = node._tracer.directory(
            ask.subject, ask.traceparent, answer.direct, len(answer.targets)
        )
        answer = dataclasses.replace(answer, span=span)
    node._send(bound, _answer(header), NODE_RESOLVE.encode_answer(answer)[1])


def resolve(node: Node, bound: _SessionLink, subject: str) -> ResolveAnswer:
    """Which local agents serve a subject, at which direct sockets.

    The answer is usable only while interest does not change: the asker is told
    ``$dir.invalidate`` when it does (``Node._interest_changed``). ``direct`` is False whenever
    a responder is not reachable directly (remote agents, other nodes): then requests go
    through the node. (A requester that asks with ``remote`` is also given responders on
    peers, with grants: ``_resolve``, fabric/_remote_direct.py.)
    """
    local = local_targets(node, bound, subject)
    if local is None or node.router.remote_interest(subject):
        return ResolveAnswer(direct=False)
    return ResolveAnswer(direct=True, targets=tuple(local))


def local_targets(node: Node, bound: _SessionLink, subject: str) -> list[DirectTarget] | None:
    """This node's agents serving ``subject`` at their direct sockets; None when one of
    them has none (it is not on this host).

    Raises:
        InvalidSubject, NotAuthorized: the asker may not publish there.
    """
    validate_subject(subject)
    if node.auth is not None:
        node.auth.check_publish(bound.session.name, subject)
    node._resolvers.add(bound)
    targets = []
    for sub in node.interest.matching(subject):
        target = node._links.get(sub.session)
        if target is None:
            continue
        if not target.session.direct:
            return None
        group = f"{sub.pattern} {sub.queue}" if sub.queue else ""
        # The name lets the requester say who answered (``Msg.sender``) on a direct reply.
        targets.append(DirectTarget(target.session.direct, sub.sid, group, target.session.name))
    return targets


# -- $agent.hold, $agent.release, $node.barrier: migration -------------------------------


def _migration(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    _spawn(node, _migration_step(node, bound, header))


async def _migration_step(node: Node, bound: _SessionLink, header: Header) -> None:
    """``$agent.hold``: queue this session's deliveries (``_node_slow.hold``). ``$agent.release``:
    send what was held, in order, then answer (so the answer trails every held frame on the
    link). ``$node.barrier``: answer once every peer processed what this node sent it so far."""
    session = bound.session
    subject = header.subject
    try:
        if subject == AGENT_HOLD.subject:
            if session.held is None:
                session.held = []
                session.held_bytes = 0
        elif subject == AGENT_RELEASE.subject:
            held, session.held = session.held or [], None
            session.held_bytes = 0
            for frame_header, body in held:
                node._send_encoded(bound, frame_header, body)
            node.stats.migrations += 1
        elif node.mesh is not None:
            budget = header.timeout_ms / 1000 if header.timeout_ms else 10.0
            await node.mesh.barrier(budget)
    except FabricError as exc:
        node._reject(bound, exc, header)
        return
    node._send(bound, _answer(header))


# -- $pool.alloc, $pool.release ----------------------------------------------------------


def _pool_release(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    if node.pool is None:
        raise RemoteProtocolError("this node serves no shared-memory pool")
    refused = node.pool.release(bound.session, payload)
    if refused:
        raise BadDescriptor(f"{refused} released slots were not held by this agent")


def _pool_alloc(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    if node.pool is None:
        raise RemoteProtocolError("this node serves no shared-memory pool")
    ask = POOL_ALLOC.decode_request(header.headers)
    _spawn(node, _allocate(node, bound, header, ask))


async def _allocate(node: Node, bound: _SessionLink, header: Header, ask: AllocRequest) -> None:
    assert node.pool is not None
    budget = header.timeout_ms / 1000 if header.timeout_ms else None
    try:
        desc = await node.pool.allocate(bound.session, ask.size, budget)
    except FabricError as exc:
        node._reject(bound, exc, header)
        return
    node._send(bound, _answer(header), desc.encode())


# -- $state.* ----------------------------------------------------------------------------


def _state(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    if node.state is None:
        raise RemoteProtocolError("this node serves no state tier")
    _spawn(node, _state_call(node, bound, header, payload))


async def _state_call(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    assert node.state is not None
    stats = node.stats
    budget = header.timeout_ms / 1000 if header.timeout_ms else 30.0
    op = header.subject[len(STATE_PREFIX) :]
    release = None
    stats.state_operations += 1
    try:
        if header.flags & Flags.SHM:
            # A large value written into the agent's slot: read in place, no socket copy.
            if node.pool is None:
                raise RemoteProtocolError("this node serves no shared-memory pool")
            payload, release = node.pool.take(bound.session, payload)
        async with asyncio.timeout(budget):
            headers, data = await node.state.call(
                op, bound.session.name, str(bound.session.id), header.headers or {}, payload
            )
    except TimeoutError:
        stats.timeouts += 1
        stats.state_errors += 1
        node._reject(bound, Timeout(f"state {op} took longer than {budget:.3f}s"), header)
        return
    except FabricError as exc:
        stats.state_errors += 1
        node._reject(bound, exc, header)
        return
    finally:
        if release is not None:
            release()
    flags = 0
    pool = node.pool
    if pool is not None and bound.session.shm and len(data) >= pool.settings.threshold:
        try:
            data, flags = await pool.give(bound.session, data, budget), Flags.SHM
        except FabricError:
            pass  # no slot free: the value goes inline
    node._send(bound, _answer(header, headers=headers, flags=flags), data)


#: Who answers each control call an agent makes (the state service answers ``$state.*``).
HANDLERS: dict[ControlCall[Any, Any], Handler] = {
    NODE_STATS: _stats,
    NODE_RESOLVE: _resolve,
    NODE_BARRIER: _migration,
    AGENT_HOLD: _migration,
    AGENT_RELEASE: _migration,
    POOL_ALLOC: _pool_alloc,
    POOL_RELEASE: _pool_release,
    **{call: _state for call in STATE_CALLS.values()},
}

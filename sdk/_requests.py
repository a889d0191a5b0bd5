"""Requests and gathers: the requester's side of request/reply and scatter-gather.

A request goes straight to a local responder when the node's directory vouches for one
(two wake-ups instead of four) and through the node otherwise; a gather fans out the same
way and fans in until every responder reached has answered, a quorum, or the deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fabric.errors import NoResponders
from fabric.protocol import PREFER_HEADER, Flags

from ._msg import Msg, Sender
from ._replies import GatherCollector, GatherResult, RequestWaiter

if TYPE_CHECKING:
    from ._core import AgentCore
    from ._direct import DirectPaths

__all__ = ["PREFER_HEADER", "gather", "request", "with_prefer"]

def with_prefer(
    headers: dict[str, str] | None, prefer: dict[str, str] | None
) -> dict[str, str] | None:
    """Headers with the ``prefer=`` labels added as ``k=v,k2=v2`` (unchanged without any)."""
    if not prefer:
        return headers
    out = dict(headers or {})
    out[PREFER_HEADER] = ",".join(f"{k}={v}" for k, v in prefer.items())
    return out


def _arm(
    loop: asyncio.AbstractEventLoop, waiter: RequestWaiter, deadline: float
) -> asyncio.TimerHandle:
    """The waiter's timeout: ``deadline`` (``time.monotonic()``) on the loop's clock."""
    return loop.call_at(loop.time() + (deadline - time.monotonic()), waiter.timed_out)


async def request(
    core: AgentCore,
    subject: str,
    payload: bytes | memoryview,
    headers: dict[str, str] | None,
    deadline: float,
    *,
    prefer: bool,
) -> Msg:
    """See ``Agent.request`` (subject validated, payload encoded, headers merged)."""
    if not core.conn.connected:
        await core.ensure_connected(deadline)
    shm = 0
    if len(payload) >= core.shared.threshold:
        payload, shm = await core.shared.put(payload, deadline, subject)
    tracer = core.tracer
    span = tracer.start("request", subject) if tracer else None
    try:
        direct = None if shm or prefer else core.direct_paths()
        if direct is not None:
            direct_reply = await _request_direct(core, direct, subject, payload, headers, deadline)
            if direct_reply is not None:
                return direct_reply
        return await _request_via_node(core, subject, payload, headers, deadline, shm)
    finally:
        if span is not None:
            span.end()


async def _request_via_node(
    core: AgentCore,
    subject: str,
    payload: bytes | memoryview,
    headers: dict[str, str] | None,
    deadline: float,
    shm: int,
) -> Msg:
    loop = core.loop
    waiter = RequestWaiter(subject, loop=loop)
    n, reply = core.inbox.new(waiter)
    timer = _arm(loop, waiter, deadline)
    try:
        core.send_pub(
            subject,
            payload,
            headers=headers,
            reply=reply,
            deadline=deadline,
            flags=Flags.NO_RESPONDERS | shm,
        )
        return await waiter.future
    finally:
        timer.cancel()
        core.inbox.pop(n)


async def _request_direct(
    core: AgentCore,
    direct: DirectPaths,
    subject: str,
    payload: bytes | memoryview,
    headers: dict[str, str] | None,
    deadline: float,
) -> Msg | None:
    """Straight to a local responder; None when the node must carry this request."""
    found = await core.direct_targets(subject, deadline)
    if found is None:
        return None
    links, sids = found
    loop = core.loop
    waiter = RequestWaiter(subject, via=links, loop=loop)
    n, reply = core.inbox.new(waiter)
    timer = _arm(loop, waiter, deadline)
    try:
        core.send_direct(links, sids, subject, payload, reply, deadline, headers=headers)
        if direct.spin:
            direct.spin_until(links[0], waiter.future.done)
        try:
            return await waiter.future
        except NoResponders:
            direct.invalidate(subject)  # the directory was stale; ask through the node
            return None
    finally:
        timer.cancel()
        core.inbox.pop(n)


async def gather(
    core: AgentCore,
    subject: str,
    payload: bytes | memoryview,
    headers: dict[str, str] | None,
    until: float,
    quorum: int | None,
    *,
    prefer: bool,
) -> GatherResult:
    """See ``Agent.gather`` (arguments checked, payload encoded, headers merged)."""
    if not core.conn.connected:
        await core.ensure_connected(until)
    shm = 0
    if len(payload) >= core.shared.threshold:
        payload, shm = await core.shared.put(payload, until, subject)
    direct = None
    if not shm and not prefer:
        direct = await core.direct_targets(subject, until)
    collector = GatherCollector(
        subject,
        quorum,
        direct=direct is not None,
        links=direct[0] if direct else (),
        loop=core.loop,
    )
    n, reply = core.inbox.new(collector)
    tracer = core.tracer
    span = tracer.start("gather", subject) if tracer else None
    try:
        if direct is not None:
            # The directory already says who is reached: no count from the node needed.
            links, sids = direct
            names = [Sender(core.direct_name(link), core.direct_node(link)) for link in links]
            collector.routed(len(links), names)
            core.send_direct(links, sids, subject, payload, reply, until, headers=headers)
        else:
            core.send_pub(
                subject,
                payload,
                headers=headers,
                reply=reply,
                deadline=until,
                flags=Flags.COUNT | Flags.NO_RESPONDERS | shm,
            )
        try:
            await asyncio.wait_for(
                asyncio.shield(collector.done), max(0.0, until - time.monotonic())
            )
        except TimeoutError:
            pass  # partial result: what arrived by the deadline
        return collector.result
    finally:
        core.inbox.pop(n)
        if span is not None:
            span.end()

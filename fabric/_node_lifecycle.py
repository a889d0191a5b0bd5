"""A node's lifecycle: binding its endpoints and starting its services, closing them, and
the sweep that drops sessions gone silent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from . import _node_slow
from .auth import Authorizer
from .errors import FabricError
from .mesh import start_mesh
from .metrics import start_monitoring
from .protocol import MAX_HEADER_BYTES
from .shm import PoolService
from .socket_claim import claim_socket
from .state import StateService, handover_for, make_state_backend
from .transports import ZmqRouterListener

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("fabric.node")


async def start(node: Node) -> None:
    """Start listening.

    Raises:
        SocketInUse: another live node serves on the Unix socket (fabric/socket_claim.py).
        ConnectionLost: when an endpoint cannot be bound (in use, no permission).
    """
    node._loop = asyncio.get_running_loop()
    if node.settings.auth_file is not None:
        node.auth = Authorizer.from_file(node.settings.auth_file)
    if node.settings.metrics or node.settings.metrics_otlp_endpoint:
        node.monitoring = await start_monitoring(node)  # first: a bad port binds nothing
    loop = asyncio.get_running_loop()
    path = node.settings.socket
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One node per socket: refuse when a live node holds it (fabric/socket_claim.py).
    node._claim = claim_socket(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket from a node that died; binding would fail
    node._unix_server = await loop.create_unix_server(node._accept_stream, str(path))
    node._claim.bound()
    os.chmod(path, 0o600)
    if node.settings.listen:
        node._zmq = ZmqRouterListener(
            node.settings.listen,
            node._accept,
            max_message=node.settings.max_payload + MAX_HEADER_BYTES,
        )
    node._sweeper = loop.create_task(sweep(node))
    node.state = StateService(make_state_backend(node.settings))
    if node.settings.shm:
        node.handover = handover_for(node.state, node._agent_of, node.settings.pool.threshold)
        node.pool = PoolService(
            node.settings.pool,
            node.settings.name,
            node._pool_attached,
            blobs=node.state.blob_host(),
            handlers=node.handover.handlers() if node.handover is not None else None,
        )
        await node.pool.start(path.with_name(path.name + ".pool"))
    node.mesh = await start_mesh(node, node.settings)
    if node.mesh is not None:
        node.mesh.directory.answerer = lambda peer, subject, requester: (
            node.direct_grants.local_targets(node, peer, subject, requester)
        )


async def aclose(node: Node) -> None:
    """Stop listening and drop every session."""
    node._closed.set()
    if node.monitoring is not None:
        await node.monitoring.aclose()
    if node._sweeper is not None:
        node._sweeper.cancel()
    if node._timer is not None:
        node._timer.cancel()
    if node._unix_server is not None:
        node._unix_server.close()
    if node._zmq is not None:
        node._zmq.close()
    if node.mesh is not None:
        node.mesh.close()
    for bound in list(node._links.values()):
        bound.link.close()
    if node._claim is not None:
        node._claim.release()  # removes the socket file only if it is still ours
    for task in list(node._tasks):
        task.cancel()
    if node.state is not None:
        with contextlib.suppress(FabricError):
            await node.state.aclose()
    if node.pool is not None:
        await node.pool.aclose()
    node._closed.set()


async def sweep(node: Node) -> None:
    """Drop sessions silent for three heartbeat intervals (agents ping while idle)."""
    interval = node.settings.heartbeat_interval
    while True:
        await asyncio.sleep(interval)
        now = node.clock()
        node.grants.sweep(now)
        deadline = now - 3 * interval
        for bound in list(node._links.values()):
            if bound.session.lost and not bound.link.closed:
                # Nothing else was sent to it since it drained.
                _node_slow.tell_lost(node, bound)
            if bound.session.last_seen < deadline:
                log.info("session %s missed its heartbeats; dropping it", bound.session)
                bound.link.close()
                node._drop(bound)


async def forget_holder(node: Node, holder: str) -> None:
    assert node.state is not None
    try:
        await node.state.session_closed(holder)
    except FabricError as exc:
        log.warning("could not release state held by session %s: %s", holder, exc)

"""ZeroMQ sockets between nodes: a ROUTER listening for peers, a DEALER per outgoing link.

CurveZMQ when keys are given: the listener is a CURVE server that a ZAP handler guards with an
allow-list of client public keys; dialers are CURVE clients that must know the listener's
public key. There is no fallback: a CURVE socket never talks to a plaintext one, and a key
that is not on the list never completes the handshake.

Sends never block the node: they use NOBLOCK and report False when ZeroMQ would have queued
past its high-water mark or has no connected peer yet. zmq errors stay in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import zmq
import zmq.asyncio
from typing_extensions import Buffer

from ..errors import ConnectionLost

__all__ = ["CurveKeys", "PeerDialer", "PeerListener", "mesh_context"]

log = logging.getLogger("fabric.mesh")

_HWM = 50_000
_COPY_LIMIT = 65536


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """This node's key pair and the peer public keys it accepts (all Z85)."""

    public: bytes
    secret: bytes
    allowed: frozenset[bytes] = field(default_factory=frozenset)


_context: zmq.asyncio.Context | None = None


def mesh_context() -> zmq.asyncio.Context:
    """The mesh's own ZeroMQ context: its ZAP handler must not see the agent listener."""
    global _context
    if _context is None:
        _context = zmq.asyncio.Context()
    return _context


class _KeyCheck:
    """ZAP credentials provider: a client key is accepted only when it is on the list."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            log.warning("refused a peer with unknown curve key %s", key.decode(errors="replace"))
        return ok


def _send(sock: zmq.asyncio.Socket, frames: tuple[Buffer, ...], size: int) -> bool:
    try:
        fut = cast(
            "asyncio.Future[Any]",
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=size < _COPY_LIMIT),  # type: ignore[arg-type]
        )
    except zmq.ZMQError:
        return False
    # With NOBLOCK a refused send fails the future at once; reading it marks it retrieved.
    return not (fut.done() and (fut.cancelled() or fut.exception() is not None))


class PeerListener:
    """A ROUTER socket for inbound peer links; ``on_frame(identity, header, payload)``."""

    def __init__(
        self,
        endpoint: str,
        on_frame: Callable[[bytes, bytes, memoryview], None],
        curve: CurveKeys | None,
    ) -> None:
        ctx = mesh_context()
        self._auth = None
        if curve is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            self._auth = AsyncioAuthenticator(ctx)
            self._auth.start()
            self._auth.configure_curve_callback(
                domain="*", credentials_provider=_KeyCheck(curve.allowed)
            )
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, _HWM)
        self._sock.setsockopt(zmq.RCVHWM, _HWM)
        self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if curve is not None:
            self._sock.curve_server = True
            self._sock.curve_secretkey = curve.secret
            self._sock.curve_publickey = curve.public
            self._sock.setsockopt(zmq.ZAP_DOMAIN, b"fabric-mesh")
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as err:
            self.close()
            raise ConnectionLost(f"cannot listen for peers on {endpoint}: {err}") from None
        self.endpoint = bytes(self._sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
        self._on_frame = on_frame
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                frames = await self._sock.recv_multipart(copy=False)
                if len(frames) != 3:
                    continue
                try:
                    self._on_frame(frames[0].bytes, frames[1].bytes, frames[2].buffer)
                except Exception:  # one bad frame must not stop the listener
                    log.exception("mesh listener: frame handling failed")

    def send(self, identity: bytes, header: bytes, payload: Buffer = b"") -> bool:
        return _send(self._sock, (identity, header, payload), len(payload))  # type: ignore[arg-type]

    def close(self) -> None:
        if hasattr(self, "_reader"):
            self._reader.cancel()
        with contextlib.suppress(zmq.ZMQError):
            self._sock.close(linger=0)
        if self._auth is not None:
            with contextlib.suppress(Exception):
                self._auth.stop()


class PeerDialer:
    """A DEALER socket dialling one peer; ``on_frame(header, payload)``."""

    def __init__(
        self,
        url: str,
        on_frame: Callable[[bytes, memoryview], None],
        curve: CurveKeys | None,
        server_key: bytes | None,
    ) -> None:
        self.url = url
        self._sock = mesh_context().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, _HWM)
        self._sock.setsockopt(zmq.RCVHWM, _HWM)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._sock.setsockopt(zmq.IDENTITY, os.urandom(12))
        if curve is not None:
            if server_key is None:
                self._sock.close(linger=0)
                raise ConnectionLost(f"curve is on but {url} has no ?key= server key")
            self._sock.curve_serverkey = server_key
            self._sock.curve_publickey = curve.public
            self._sock.curve_secretkey = curve.secret
        try:
            self._sock.connect(url)
        except zmq.ZMQError as err:
            self._sock.close(linger=0)
            raise ConnectionLost(f"cannot dial {url}: {err}") from None
        self._on_frame = on_frame
        self.closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                frames = await self._sock.recv_multipart(copy=False)
                if len(frames) != 2:
                    continue
                try:
                    self._on_frame(frames[0].bytes, frames[1].buffer)
                except Exception:
                    log.exception("mesh dialer: frame handling failed")

    def send(self, header: bytes, payload: Buffer = b"") -> bool:
        if self.closed:
            return False
        return _send(self._sock, (header, payload), len(payload))  # type: ignore[arg-type]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._reader.cancel()
        with contextlib.suppress(zmq.ZMQError):
            self._sock.close(linger=0)

"""ZeroMQ sockets between nodes: a ROUTER listening for peers, a DEALER per outgoing link.

CurveZMQ when keys are given: the listener is a CURVE server that a ZAP handler guards with an
allow-list of client public keys; dialers are CURVE clients that must know the listener's
public key. There is no fallback: a CURVE socket never talks to a plaintext one, and a key
that is not on the list never completes the handshake.

The sockets are plain (not ``zmq.asyncio``) and driven by the event loop's reader callback on
``ZMQ_FD``: one callback drains every queued message with NOBLOCK receives, so a burst costs
no future or task per message (measured: the asyncio wrapper cost about a third of a
cross-node round trip). ZMQ_FD is edge-triggered and any send may consume an edge, so after
each send the socket's EVENTS are checked and a drain is scheduled if input is waiting.

Sends never block the node: NOBLOCK, and False when ZeroMQ would have to queue past its
high-water mark or has no connected peer. zmq errors stay in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import zmq
from typing_extensions import Buffer

from ..errors import ConnectionLost

__all__ = ["CurveKeys", "PeerDialer", "PeerListener", "mesh_context"]

log = logging.getLogger("fabric.mesh")

_HWM = 50_000
_COPY_LIMIT = 65536
_ZAP_DOMAIN = "fabric-mesh"
#: Messages handled per reader callback before yielding to the loop (fairness).
_BATCH = 256


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """This node's key pair and the peer public keys it accepts (all Z85)."""

    public: bytes
    secret: bytes
    allowed: frozenset[bytes] = field(default_factory=frozenset)


_context: zmq.Context[zmq.Socket[bytes]] | None = None


def mesh_context() -> zmq.Context[zmq.Socket[bytes]]:
    """The mesh's own ZeroMQ context: its ZAP handler must not see the agent listener."""
    global _context
    if _context is None:
        _context = zmq.Context()
    return _context


class _KeyCheck:
    """ZAP credentials provider: a client key is accepted only when it is on the list.
    Called from the authenticator's thread; it only reads an immutable set."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            log.warning("refused a peer with unknown curve key %s", key.decode(errors="replace"))
        return ok


def _events(sock: zmq.Socket[bytes]) -> int:
    return cast(int, sock.getsockopt(zmq.EVENTS))


class _Driven:
    """A plain zmq socket drained by a loop reader callback."""

    def __init__(self, sock: zmq.Socket[bytes], parts: int) -> None:
        self._sock = sock
        self._parts = parts
        self._loop = asyncio.get_running_loop()
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._closed = False
        self._pending = False
        self._loop.add_reader(self._fd, self._drain)
        self._loop.call_soon(self._drain)  # input may already be waiting

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        self._pending = False
        if self._closed:
            return
        sock = self._sock
        try:
            for _ in range(_BATCH):
                if not _events(sock) & zmq.POLLIN:
                    return
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                if len(frames) == self._parts:
                    try:
                        self._dispatch(frames)
                    except Exception:  # one bad frame must not stop the link
                        log.exception("mesh: frame handling failed")
                    if self._closed:
                        return
        except zmq.ZMQError:
            return
        self._kick()  # batch exhausted with input left: continue on the next loop turn

    def _kick(self) -> None:
        if not self._pending and not self._closed:
            self._pending = True
            self._loop.call_soon(self._drain)

    def _send(self, frames: tuple[Buffer, ...], size: int) -> bool:
        if self._closed:
            return False
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=size < _COPY_LIMIT)  # type: ignore[arg-type]
            ok = True
        except zmq.ZMQError:
            ok = False
        try:
            if _events(self._sock) & zmq.POLLIN:
                self._kick()  # the send may have eaten the FD's edge
        except zmq.ZMQError:
            pass
        return ok

    def _close(self, linger_ms: int = 0) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(zmq.ZMQError):
            self._sock.close(linger=linger_ms)


class PeerListener(_Driven):
    """A ROUTER socket for inbound peer links; ``on_frame(identity, header, payload)``."""

    def __init__(
        self,
        endpoint: str,
        on_frame: Callable[[bytes, bytes, memoryview], None],
        curve: CurveKeys | None,
        *,
        max_message: int = -1,
    ) -> None:
        ctx = mesh_context()
        self._auth = None
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(ctx)
            self._auth.start()
            self._auth.configure_curve_callback(
                domain=_ZAP_DOMAIN, credentials_provider=_KeyCheck(curve.allowed)
            )
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # A message part above this drops the peer before libzmq buffers it whole.
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        if curve is not None:
            sock.curve_server = True
            sock.curve_secretkey = curve.secret
            sock.curve_publickey = curve.public
            sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN.encode())
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as err:
            sock.close(linger=0)
            self._stop_auth()
            raise ConnectionLost(f"cannot listen for peers on {endpoint}: {err}") from None
        self.endpoint = bytes(sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
        self._on_frame = on_frame
        super().__init__(sock, 3)

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        self._on_frame(frames[0].bytes, frames[1].bytes, frames[2].buffer)

    def send(self, identity: bytes, header: bytes, payload: Buffer = b"") -> bool:
        return self._send((identity, header, payload), len(payload))  # type: ignore[arg-type]

    def _stop_auth(self) -> None:
        if self._auth is not None:
            with contextlib.suppress(Exception):
                self._auth.stop()

    def close(self) -> None:
        self._close()
        self._stop_auth()


class PeerDialer(_Driven):
    """A DEALER socket dialling one peer; ``on_frame(header, payload)``."""

    def __init__(
        self,
        url: str,
        on_frame: Callable[[bytes, memoryview], None],
        curve: CurveKeys | None,
        server_key: bytes | None,
    ) -> None:
        self.url = url
        sock = mesh_context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.IDENTITY, os.urandom(12))
        if curve is not None:
            if server_key is None:
                sock.close(linger=0)
                raise ConnectionLost(f"curve is on but {url} has no ?key= server key")
            sock.curve_serverkey = server_key
            sock.curve_publickey = curve.public
            sock.curve_secretkey = curve.secret
        try:
            sock.connect(url)
        except zmq.ZMQError as err:
            sock.close(linger=0)
            raise ConnectionLost(f"cannot dial {url}: {err}") from None
        self._on_frame = on_frame
        super().__init__(sock, 2)

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        self._on_frame(frames[0].bytes, frames[1].buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, header: bytes, payload: Buffer = b"") -> bool:
        return self._send((header, payload), len(payload))  # type: ignore[arg-type]

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms``, messages already queued still go out for that long
        (in libzmq's I/O thread: this returns at once)."""
        self._close(linger_ms)

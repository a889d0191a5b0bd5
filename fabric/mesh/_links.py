"""ZeroMQ between nodes: the mesh's keys and context around the one ZeroMQ driver
(``fabric.transports``), which agents use too.

CurveZMQ when keys are given: the listener is a CURVE server that a ZAP handler guards with an
allow-list of client public keys; dialers are CURVE clients that must know the listener's
public key. There is no fallback: a CURVE socket never talks to a plaintext one, and a key
that is not on the list never completes the handshake.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from ..errors import ConnectionLost
from ..transports import ZmqDealerLink, ZmqPeerLink, ZmqRouterListener, dial_zmq

__all__ = ["CurveKeys", "PeerListener", "dial_peer", "mesh_context"]

log = logging.getLogger("fabric.mesh")

_ZAP_DOMAIN = "fabric-mesh"


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


class PeerListener:
    """A ROUTER for inbound peer links: ``on_link`` gets one ``Link`` per dialling peer."""

    def __init__(
        self,
        endpoint: str,
        on_link: Callable[[ZmqPeerLink], None],
        curve: CurveKeys | None,
        *,
        max_message: int = -1,
    ) -> None:
        ctx = mesh_context()
        self._auth: Any = None
        configure = None
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(ctx)
            self._auth.start()
            self._auth.configure_curve_callback(
                domain=_ZAP_DOMAIN, credentials_provider=_KeyCheck(curve.allowed)
            )

            def configure(sock: zmq.Socket[bytes]) -> None:
                sock.curve_server = True
                sock.curve_secretkey = curve.secret
                sock.curve_publickey = curve.public
                sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN.encode())

        try:
            self._router = ZmqRouterListener(
                endpoint, on_link, max_message=max_message, context=ctx, configure=configure
            )
        except ConnectionLost as exc:
            self._stop_auth()
            raise ConnectionLost(f"cannot listen for peers: {exc}") from None
        self.endpoint = self._router.endpoint

    def _stop_auth(self) -> None:
        if self._auth is not None:
            with contextlib.suppress(Exception):
                self._auth.stop()

    def close(self) -> None:
        self._router.close()
        self._stop_auth()


def dial_peer(url: str, curve: CurveKeys | None, server_key: bytes | None) -> ZmqDealerLink:
    """A DEALER link to a peer's cluster endpoint (a CURVE client when keys are given).

    Raises:
        ConnectionLost: a bad URL, or curve is on and the URL has no server key.
    """
    configure = None
    if curve is not None:
        if server_key is None:
            raise ConnectionLost(f"curve is on but {url} has no ?key= server key")

        def configure(sock: zmq.Socket[bytes]) -> None:
            sock.curve_serverkey = server_key
            sock.curve_publickey = curve.public
            sock.curve_secretkey = curve.secret

    return dial_zmq(url, context=mesh_context(), configure=configure)

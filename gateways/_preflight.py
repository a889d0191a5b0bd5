"""Checks ``fabric gateway`` makes before it says "ready": the port is free (bound here, so
a port in use is one clear line instead of uvicorn's traceback) and the node answers (a
gateway in front of no node says so at once, not only on ``/v1/health``)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from fabric.errors import ConnectionLost
from fabric.paths import default_socket_path, default_url

__all__ = ["bind_listen", "node_problem"]


def bind_listen(host: str, port: int, listen: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` for uvicorn to serve on.

    Raises:
        ConnectionLost: the address is in use or cannot be bound, with what to do next.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise ConnectionLost(f"gateway cannot listen on {listen}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = (
            "; another gateway or server holds it: stop it, or pick another --listen "
            "(FABRIC_GATEWAY_LISTEN)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConnectionLost(
            f"gateway cannot listen on {listen}: {exc.strerror or exc}{hint}"
        ) from None
    sock.setblocking(False)
    return sock


def node_problem(url: str | None) -> str | None:
    """Why the gateway's node cannot be reached right now, with the next step; None when
    the first URL of the list accepts a connection (or is not checkable here)."""
    first = (url or default_url()).split(",")[0].strip()
    if first.startswith("unix://"):
        path = Path(first[len("unix://") :])
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            reason = exc.strerror or str(exc)
        else:
            return None
        finally:
            probe.close()
    elif first.startswith("tcp://"):
        host, _, port = first[len("tcp://") :].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
        else:
            return None
    else:
        return None
    text = f"no node answers at {first} ({reason}): start one with `fabric node`, or pass --url"
    if not os.environ.get("XDG_RUNTIME_DIR") and url:
        text += (
            f"; XDG_RUNTIME_DIR is not set, so the local node's socket is "
            f"{default_socket_path()}"
        )
    return text

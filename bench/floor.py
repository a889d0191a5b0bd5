"""The machine's floor for request/reply: a socket ping-pong between two processes.

No broker, no event loop, no framing beyond a 4-byte length: the client writes a message with
one ``sendmsg`` (header and payload gathered, not joined), the echo process reads it into a
buffer allocated once and writes it back, and the client reads the reply into its own buffer.
Both sides block in ``recv``, so each message costs the least the kernel allows: a write, a
wake-up of the other process, a read, each way. Any system's ``rr`` p50 above this row is its
own work (see docs/bench.md, "Where each microsecond goes").

``python -m bench.floor serve unix PATH|tcp`` is the echo process: it prints ``ready
ADDRESS`` and serves one connection until it closes or stdin closes.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

__all__ = ["FloorConnection", "connect_floor", "main", "serve_floor"]

_HEADER = struct.Struct(">I")
#: Buffers start big enough for every rr size (1 MiB) and grow if a message is larger.
_INITIAL = (1 << 20) + _HEADER.size


def _read_message(sock: socket.socket, buf: bytearray) -> tuple[bytearray, int]:
    """One length-prefixed message into ``buf`` (grown if needed); returns the buffer and the
    total length including the header.

    Raises:
        ConnectionError: the peer closed mid-message or before one.
    """
    have = 0
    need = _HEADER.size
    view = memoryview(buf)
    while have < need:
        got = sock.recv_into(view[have:])
        if not got:
            raise ConnectionError("peer closed")
        have += got
        if need == _HEADER.size and have >= need:
            need += _HEADER.unpack_from(buf)[0]
            if need > len(buf):
                view.release()
                buf.extend(bytes(need - len(buf)))
                view = memoryview(buf)
    view.release()
    return buf, need


def serve_floor(listener: socket.socket) -> None:
    """Echo every message of one accepted connection until it closes."""
    conn, _ = listener.accept()
    _tune(conn)
    buf = bytearray(_INITIAL)
    with conn:
        while True:
            try:
                buf, n = _read_message(conn, buf)
            except ConnectionError:
                return
            with memoryview(buf) as view:
                conn.sendall(view[:n])


class FloorConnection:
    """The client side: one blocking socket and a receive buffer allocated once."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray(_INITIAL)

    def request(self, payload: bytes) -> int:
        """Send ``payload``, wait for the echo; returns the reply's payload length.

        Raises:
            ConnectionError: the echo process went away.
        """
        header = _HEADER.pack(len(payload))
        sent = self._sock.sendmsg([header, payload])
        if sent < len(header) + len(payload):  # a short write (big payloads): finish it,
            if sent < len(header):  # without joining header and payload (a copy)
                self._sock.sendall(header[sent:])
                sent = len(header)
            with memoryview(payload) as view:
                self._sock.sendall(view[sent - len(header) :])
        self._buf, n = _read_message(self._sock, self._buf)
        return n - _HEADER.size

    def close(self) -> None:
        self._sock.close()


def _tune(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_floor(address: str) -> FloorConnection:
    """Connect to an echo process at ``unix:PATH`` or ``tcp:HOST:PORT``.

    Raises:
        OSError: nothing listens there.
    """
    kind, _, rest = address.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(rest)
    else:
        host, _, port = rest.rpartition(":")
        sock = socket.create_connection((host, int(port)))
    _tune(sock)
    return FloorConnection(sock)


def _listen(kind: str, path: str) -> tuple[socket.socket, str]:
    if kind == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        return listener, f"unix:{path}"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    return listener, f"tcp:127.0.0.1:{listener.getsockname()[1]}"


def _exit_on_stdin_eof() -> None:
    def watch() -> None:
        fd = sys.stdin.fileno()
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        os._exit(0)  # the bench closed our stdin (or died): nothing to clean up

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """``serve unix PATH`` or ``serve tcp``: the echo process of the floor rows."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "serve" or args[1] not in ("unix", "tcp"):
        print("usage: python -m bench.floor serve unix PATH | serve tcp", file=sys.stderr)
        return 2
    listener, address = _listen(args[1], args[2] if len(args) > 2 else "")
    _exit_on_stdin_eof()
    print(f"ready {address}", flush=True)
    with listener:
        serve_floor(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())

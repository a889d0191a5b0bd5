"""A minimal agent process for the multi-process shared-memory tests (not a test module).

Run as ``python shm_agent.py FD`` where FD is its end of a socketpair to the test, which plays
the node. It receives the pool segments exactly as an SDK would (layout + fds over
SCM_RIGHTS), probes that the segments are sealed, maps them, then obeys length-prefixed msgpack
commands: view / peek / write / bad / release / exit.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import sys
from typing import Any

import msgpack

from fabric.errors import BadDescriptor
from fabric.shm import (
    Descriptor,
    PoolLayout,
    SharedRegion,
    encode_release_batch,
    recv_fds,
    verify_segment,
)

_LEN = struct.Struct("<I")


def send_msg(sock: socket.socket, obj: Any) -> None:
    data = msgpack.packb(obj)
    sock.sendall(_LEN.pack(len(data)) + data)


def recv_msg(sock: socket.socket) -> Any:
    """One message, or None when the peer closed the connection."""
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    body = _recv_exact(sock, _LEN.unpack(head)[0])
    return None if body is None else msgpack.unpackb(body)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _probe(call: Any) -> str:
    try:
        call()
    except OSError as exc:
        return os.strerror(exc.errno or 0)
    return "allowed"


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    data, fds = recv_fds(sock, 65536, maxfds=8)
    layout = PoolLayout.from_wire(msgpack.unpackb(data))
    probes: dict[str, str] = {}
    for fd, size in zip(fds, layout.segment_sizes, strict=True):
        verify_segment(fd, size)
        # A hostile reader tries to pull the segment out from under everyone else.
        probes["shrink"] = _probe(lambda fd=fd: os.ftruncate(fd, 0))
        probes["grow"] = _probe(lambda fd=fd, size=size: os.ftruncate(fd, 2 * size))
        probes["seal_write"] = _probe(lambda fd=fd: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0x0008))
    region = SharedRegion.attach(layout, fds)
    send_msg(sock, {"op": "ready", "pid": os.getpid(), "probes": probes})
    held: list[tuple[Descriptor, memoryview]] = []
    while (msg := recv_msg(sock)) is not None:
        op = msg["op"]
        if op == "view":
            d = Descriptor.decode(msg["desc"])
            v = region.view(d)
            held.append((d, v))
            send_msg(sock, {"sha256": hashlib.sha256(v).hexdigest(), "length": len(v)})
        elif op == "peek":
            send_msg(sock, {"head": bytes(held[-1][1][:16])})
        elif op == "write":
            d = Descriptor.decode(msg["desc"])
            region.write(d, bytes([msg["fill"]]) * d.length)
            # What a PUB with the SHM flag would carry.
            send_msg(sock, {"pub": d.encode()})
        elif op == "bad":
            try:
                region.view(Descriptor.decode(msg["desc"]))
            except BadDescriptor as exc:
                send_msg(sock, {"refused": exc.code})
            else:
                send_msg(sock, {"refused": None})
        elif op == "release":
            batch = encode_release_batch(d for d, _ in held)
            for _, v in held:
                v.release()
            held.clear()
            send_msg(sock, {"release": batch})
        elif op == "exit":
            send_msg(sock, {"closed": region.close()})
            break


if __name__ == "__main__":
    main()

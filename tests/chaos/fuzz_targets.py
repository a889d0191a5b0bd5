"""atheris fuzz targets (run by tests/chaos/test_long.py under the ``soak`` marker).

    python tests/chaos/fuzz_targets.py decoder -atheris_runs=N
    FUZZ_NODE_SOCKET=/path/node.sock python tests/chaos/fuzz_targets.py node -max_total_time=S

One invariant each, as h11's fuzzer holds (STYLE.md §7):

- ``decoder``: any bytes, fed whole or in pieces, either yield frames whose headers decode or
  raise one of the fabric's typed errors (``FabricError``): never anything else, never a hang.
- ``node``: any bytes sent to a running node over its Unix socket, before or after a valid
  HELLO, never take the node down: every 200 inputs a fresh client must still be welcomed.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    import msgpack

    from fabric.errors import FabricError
    from fabric.framing import FrameDecoder
    from fabric.wire import Header, Kind, decode_header, encode_header

MAX_PAYLOAD = 1 << 20


def decoder_target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    pieces = fdp.ConsumeIntInRange(1, 8)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    dec = FrameDecoder(MAX_PAYLOAD)
    step = max(1, len(body) // pieces)
    try:
        for i in range(0, max(len(body), 1), step):
            for header, _payload in dec.feed(body[i : i + step]):
                try:
                    decode_header(header)
                except FabricError:
                    pass
    except FabricError:
        pass  # the typed refusal: the invariant holds


def _frame(header: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("<II", len(header), len(payload)) + header + payload


_HELLO = _frame(
    encode_header(Header(Kind.HELLO, msg_id=1)),
    msgpack.packb({"name": "fuzzer", "labels": {}}),
)
_count = 0


def _welcomed(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(_HELLO)
        return len(s.recv(64)) > 0


def node_target(data: bytes) -> None:
    global _count
    path = os.environ["FUZZ_NODE_SOCKET"]
    fdp = atheris.FuzzedDataProvider(data)
    after_hello = fdp.ConsumeBool()
    as_frames = fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect(path)
            if after_hello:
                s.sendall(_HELLO)
            s.sendall(_frame(body[:64], body[64:]) if as_frames and body else body)
            s.shutdown(socket.SHUT_WR)  # the node sees the end and closes: no waiting
            while s.recv(65536):
                pass
        except OSError:
            pass  # closed on us or nothing to say: both fine
    _count += 1
    if _count % 200 == 0 and not _welcomed(path):
        raise RuntimeError("the node stopped welcoming clients")


if __name__ == "__main__":
    which = sys.argv.pop(1)
    atheris.Setup(sys.argv, decoder_target if which == "decoder" else node_target)
    atheris.Fuzz()

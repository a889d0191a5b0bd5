"""Frames on a byte stream (the node's Unix-domain socket).

ZeroMQ keeps message boundaries itself; a stream socket does not, so each message travels as

    u32 header length | u32 payload length | header bytes | payload bytes   (little-endian)

``FrameDecoder`` is sans-I/O: feed it whatever ``recv`` returned, in any pieces, and pull out
``(header, payload)`` pairs. Payloads come out as memoryviews over the bytes received, so a node
forwards them without a copy. Lengths are checked before any buffering, so a hostile peer
cannot make the decoder hold more than one maximal frame.
"""

from __future__ import annotations

import struct

from typing_extensions import Buffer

from .errors import PayloadTooLarge, RemoteProtocolError
from .wire import MAX_HEADER_BYTES

__all__ = ["PREFIX_SIZE", "FrameDecoder", "frame_prefix"]

_PREFIX = struct.Struct("<II")
PREFIX_SIZE = _PREFIX.size


def frame_prefix(header_len: int, payload_len: int) -> bytes:
    """The 8-byte prefix announcing a frame of these sizes."""
    return _PREFIX.pack(header_len, payload_len)


class FrameDecoder:
    """Reassembles frames from stream bytes.

    Raises ``RemoteProtocolError`` (header too large, empty header) or ``PayloadTooLarge``;
    after either the stream is out of sync and the connection must be closed.
    """

    def __init__(self, max_payload: int) -> None:
        self._max_payload = max_payload
        self._buf = bytearray()
        # Size of the frame being assembled, once its prefix has been read.
        self._need_header = -1
        self._need_payload = -1

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: Buffer) -> list[tuple[bytes, memoryview]]:
        """Add received bytes; return every frame now complete, in order."""
        if not self._buf and isinstance(data, bytes):
            # Fast path: frames that arrive whole are sliced out of the immutable chunk the
            # event loop handed us, so the payload view costs no copy.
            src: bytes | bytearray = data
        else:
            self._buf += data
            src = self._buf
        frames: list[tuple[bytes, memoryview]] = []
        view = memoryview(src)
        pos = 0
        end = len(src)
        while True:
            if self._need_header < 0:
                if end - pos < PREFIX_SIZE:
                    break
                header_len, payload_len = _PREFIX.unpack_from(src, pos)
                if header_len == 0 or header_len > MAX_HEADER_BYTES:
                    raise RemoteProtocolError(f"frame header length {header_len} out of range")
                if payload_len > self._max_payload:
                    raise PayloadTooLarge(size=payload_len, limit=self._max_payload)
                self._need_header, self._need_payload = header_len, payload_len
                pos += PREFIX_SIZE
            total = self._need_header + self._need_payload
            if end - pos < total:
                break
            start = pos + self._need_header
            header = bytes(view[pos:start])
            payload = view[start : start + self._need_payload]
            if src is self._buf:
                # The bytearray is about to be compacted; the payload needs its own bytes.
                payload = memoryview(bytes(payload))
            frames.append((header, payload))
            pos += total
            self._need_header = self._need_payload = -1
        if src is self._buf:
            view.release()  # a bytearray cannot be resized while a view is exported
            del self._buf[:pos]
        elif pos < end:
            self._buf += view[pos:]
        return frames

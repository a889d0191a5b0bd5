"""What the agents in every system send and check, so all systems do the same work.

Checks are cheap on purpose (a length and a few sampled bytes of a fixed pattern): the bench
measures delivery, and a full checksum of 16 MiB would measure the checksum instead.
"""

from __future__ import annotations

from functools import cache

__all__ = [
    "BIG_SIZE",
    "FAN_REPLY",
    "big_ok",
    "check_big",
    "map_result",
    "map_tasks",
    "parse_stream_request",
    "pattern",
    "size_label",
    "stream_request",
]

#: Payload of the ``bigfan`` scenario.
BIG_SIZE = 16 * 1024 * 1024
#: Reply of a fan-out child (small: fan-out measures coordination, not bytes).
FAN_REPLY = b"ok"

_PRIME = 251
_SAMPLES = 64


@cache
def pattern(size: int) -> bytes:
    """``size`` bytes of a fixed pattern (byte ``i`` is ``i % 251``), built once per size."""
    block = bytes(range(_PRIME))
    reps, rest = divmod(size, _PRIME)
    return block * reps + block[:rest]


def check_big(data: bytes | bytearray | memoryview, expected: int) -> bool:
    """True when ``data`` has ``expected`` bytes and sampled positions hold the pattern."""
    if len(data) != expected:
        return False
    if expected == 0:
        return True
    step = max(1, expected // _SAMPLES)
    positions = [*range(0, expected, step), expected - 1]
    return all(data[i] == i % _PRIME for i in positions)


def big_ok(data: bytes | bytearray | memoryview) -> bytes:
    """A receiver's answer to a big payload: ``ok:<len>`` or ``bad:<len>``."""
    verdict = b"ok" if check_big(data, len(data)) else b"bad"
    return verdict + b":" + str(len(data)).encode()


def map_tasks(count: int) -> list[bytes]:
    """``count`` distinct small tasks."""
    return [f"task-{i:05d}".encode() for i in range(count)]


def map_result(task: bytes | bytearray | memoryview) -> bytes:
    """What a map worker answers for ``task`` (the client checks order with it)."""
    return b"done:" + bytes(task)


def stream_request(chunks: int, size: int) -> bytes:
    """Payload asking a responder for ``chunks`` chunks of ``size`` bytes."""
    return f"{chunks}:{size}".encode()


def parse_stream_request(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Inverse of :func:`stream_request`, bounded so a bad request cannot ask for gigabytes.

    Raises:
        ValueError: the payload is not ``<chunks>:<size>`` within bounds.
    """
    chunks_text, _, size_text = bytes(data).decode().partition(":")
    chunks, size = int(chunks_text), int(size_text)
    if not (0 < chunks <= 1_000_000 and 0 < size <= 65_536):
        raise ValueError(f"stream request out of bounds: {chunks} chunks of {size} bytes")
    return chunks, size


def size_label(size: int) -> str:
    """``64B``, ``4KiB``, ``1MiB``, ``16MiB``."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"

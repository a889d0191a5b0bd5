"""The envelope header: small, fixed, versioned, packed with msgpack.

A message on the wire is two frames: this header and the payload. Nodes decode headers only;
the payload frame is forwarded as it came. The header is a msgpack array of fixed arity, so
decoding is one ``unpackb`` and a handful of type checks, and an old node can refuse a newer
version by its first element.

Decoding untrusted bytes either returns a valid ``Header`` or raises ``RemoteProtocolError``:
nothing else escapes (tests/test_wire_properties.py holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from ..errors import RemoteProtocolError

__all__ = [
    "MAX_HEADER_BYTES",
    "PROTOCOL_VERSION",
    "Flags",
    "Header",
    "Kind",
    "Status",
    "decode_header",
    "encode_header",
    "encode_msg",
]

PROTOCOL_VERSION = 1

#: A header is metadata; anything bigger than this is hostile or a bug.
MAX_HEADER_BYTES = 64 * 1024
_MAX_USER_HEADERS = 64
_MAX_STR = 16 * 1024


class Kind(IntEnum):
    """What a frame asks for. Agent→node and node→agent kinds share one space."""

    HELLO = 1  #: agent → node: identity, labels, credential (payload: msgpack map)
    WELCOME = 2  #: node → agent: node name, site, limits (payload: msgpack map)
    SUB = 3  #: agent → node: interest in ``subject`` (``queue`` optional) under ``sid``
    UNSUB = 4  #: agent → node: drop subscription ``sid``
    PUB = 5  #: agent → node: a message for ``subject``, replies to ``reply``
    MSG = 6  #: node → agent: a delivery for subscription ``sid``
    PING = 7  #: either way: liveness probe
    PONG = 8  #: either way: answer to PING
    ERR = 9  #: either way: ``status``/``subject`` say what failed; payload: (code, message)
    STATUS = 10  #: node → agent about a PUB it routed: no responders, or how many it reached
    CONTROL = 11  #: agent ↔ node: control-plane call (state, pool, directory); payload: map


class Status(IntEnum):
    """Outcome codes carried by replies and STATUS frames (HTTP-like, so gateways map 1:1)."""

    OK = 0
    STREAM_OPEN = 100  #: a stream request; ``seq`` is the initial credit
    STREAM_CREDIT = 101  #: requester → responder: ``seq`` more chunks may be sent
    ROUTED = 202  #: STATUS: the PUB reached ``seq`` responders
    STREAM_END = 204  #: responder → requester: no more chunks
    STREAM_CHUNK = 206  #: responder → requester: chunk number ``seq``
    #: responder → requester: several chunks, the first numbered ``seq`` (sdk/_chunks.py);
    #: only to a requester that asked for it in its stream-open (``CHUNKS_HEADER``)
    STREAM_CHUNKS = 207
    NOT_AUTHORIZED = 403
    #: STATUS node → agent: ``seq`` messages for subscription ``sid`` were dropped because
    #: the agent fell behind (sent once its backlog drained; docs/limits.md)
    SLOW_CONSUMER = 429
    TIMEOUT = 408
    PAYLOAD_TOO_LARGE = 413
    CANCELLED = 499
    ERROR = 500  #: the handler raised; payload is msgpack (code, message)
    NO_RESPONDERS = 503


class Flags:
    """PUB options. Plain ints, not an ``IntFlag``: ``flags & Flags.X`` runs per message, and
    enum arithmetic costs a microsecond each time."""

    NONE = 0
    #: The node answers with STATUS ROUTED carrying how many responders it reached
    #: (``gather`` needs it to return as soon as everyone answered).
    COUNT = 1
    #: The node answers STATUS NO_RESPONDERS when nobody listens (requests want this;
    #: fire-and-forget publishes do not).
    NO_RESPONDERS = 2
    #: The payload frame is a shared-memory ``Descriptor``, not the bytes: the node checks it
    #: and passes it to local receivers (MSG carries the flag too), copying only for remote
    #: ones.
    SHM = 4


@dataclass(slots=True)
class Header:
    """One frame's metadata. Field order is the wire order; do not reorder."""

    kind: Kind
    #: Dotted subject the message is for (or the subscription's pattern for SUB).
    subject: str = ""
    #: Where replies go; empty for fire-and-forget.
    reply: str = ""
    #: Sender-unique id, for tracing and de-duplication.
    msg_id: int = 0
    #: Time left for the whole exchange, in milliseconds; 0 means no deadline. Relative on
    #: purpose: monotonic clocks of two hosts cannot be compared, elapsed budgets can.
    timeout_ms: int = 0
    #: W3C trace context of the sender's span ("" when tracing is off).
    traceparent: str = ""
    #: User headers; str to str, at most 64.
    headers: dict[str, str] | None = None
    #: Subscription id (SUB, UNSUB, MSG).
    sid: int = 0
    #: Queue group (SUB).
    queue: str = ""
    #: Outcome code (see ``Status``).
    status: int = 0
    #: Sequence or count, by ``status`` (chunk number, credit, responders reached).
    seq: int = 0
    #: ``Flags`` on PUB.
    flags: int = 0
    #: Protocol version; checked first when decoding.
    version: int = field(default=PROTOCOL_VERSION)


_packer = msgpack.Packer(use_bin_type=True)


def encode_header(h: Header) -> bytes:
    """Pack a header for the wire. Raises nothing for a header built from valid fields."""
    return _packer.pack(  # type: ignore[no-any-return]
        (
            h.version,
            int(h.kind),
            h.subject,
            h.reply,
            h.msg_id,
            h.timeout_ms,
            h.traceparent,
            h.headers,
            h.sid,
            h.queue,
            h.status,
            h.seq,
            h.flags,
        )
    )


def encode_msg(
    subject: str,
    reply: str,
    msg_id: int,
    timeout_ms: int,
    traceparent: str,
    headers: dict[str, str] | None,
    sid: int,
    status: int,
    seq: int,
    flags: int,
) -> bytes:
    """``encode_header`` of a MSG, without building a ``Header``: the node's per-delivery path."""
    return _packer.pack(  # type: ignore[no-any-return]
        (PROTOCOL_VERSION, _MSG, subject, reply, msg_id, timeout_ms, traceparent, headers, sid,
         "", status, seq, flags)
    )


_MSG = int(Kind.MSG)
_KINDS = {int(k): k for k in Kind}
_ARITY = 13
_U64 = (1 << 64) - 1


def _str(value: Any, name: str) -> str:
    if type(value) is not str:
        raise RemoteProtocolError(f"header field {name!r} must be a string")
    if len(value) > _MAX_STR:
        raise RemoteProtocolError(f"header field {name!r} is too long")
    return value


def _uint(value: Any, name: str) -> int:
    if type(value) is not int or value < 0 or value > _U64:
        raise RemoteProtocolError(f"header field {name!r} must be an unsigned integer")
    return value


def _user_headers(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise RemoteProtocolError("user headers must be a map of strings")
    if len(value) > _MAX_USER_HEADERS:
        raise RemoteProtocolError(f"more than {_MAX_USER_HEADERS} user headers")
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            raise RemoteProtocolError("user headers must be a map of strings")
    return value


def decode_header(data: bytes | memoryview) -> Header:
    """Decode an untrusted header frame.

    Raises:
        RemoteProtocolError: for anything but a well-formed header of a known version.
    """
    if len(data) > MAX_HEADER_BYTES:
        raise RemoteProtocolError(f"header of {len(data)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=_MAX_STR,
            max_bin_len=0,
            max_array_len=_ARITY,
            max_map_len=_MAX_USER_HEADERS,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types; all mean "not a header"
        raise RemoteProtocolError(f"undecodable header: {exc.__class__.__name__}") from None
    if type(fields) is not tuple or len(fields) != _ARITY:
        raise RemoteProtocolError("header must be an array of 13 fields")
    (
        version,
        kind,
        subject,
        reply,
        msg_id,
        timeout_ms,
        traceparent,
        headers,
        sid,
        queue,
        status,
        seq,
        flags,
    ) = fields
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise RemoteProtocolError(f"unsupported protocol version {version!r}")
    kind_enum = _KINDS.get(kind) if type(kind) is int else None
    if kind_enum is None:
        raise RemoteProtocolError(f"unknown message kind {kind!r}")
    # One combined test on the hot path; the precise complaint is worked out only on failure.
    if (
        type(subject) is not str
        or type(reply) is not str
        or type(traceparent) is not str
        or type(queue) is not str
        or type(msg_id) is not int
        or type(timeout_ms) is not int
        or type(sid) is not int
        or type(status) is not int
        or type(seq) is not int
        or type(flags) is not int
        or (msg_id | timeout_ms | sid | status | seq | flags) < 0
    ):
        _explain(fields)
    if headers is not None:
        headers = _user_headers(headers)
    return Header(
        kind_enum,
        subject,
        reply,
        msg_id,
        timeout_ms,
        traceparent,
        headers,
        sid,
        queue,
        status,
        seq,
        flags,
        version,
    )


def _explain(fields: tuple[Any, ...]) -> None:
    """Raise the precise error for a header that failed the combined check."""
    for index, name in ((2, "subject"), (3, "reply"), (6, "traceparent"), (9, "queue")):
        _str(fields[index], name)
    for index, name in (
        (4, "msg_id"),
        (5, "timeout_ms"),
        (8, "sid"),
        (10, "status"),
        (11, "seq"),
        (12, "flags"),
    ):
        _uint(fields[index], name)
    raise RemoteProtocolError("malformed header")

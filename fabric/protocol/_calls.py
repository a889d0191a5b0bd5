"""One typed definition per control call: its subject, request and answer fields, its errors.

A control call is a CONTROL frame to the node (``$node.*``, ``$agent.*``, ``$pool.*``,
``$state.*``), answered by a CONTROL frame with the same ``msg_id`` or by ERR carrying one of
the typed errors listed here. ``$dir.invalidate`` goes the other way and is not answered.
Small arguments travel in the user headers (``_codec.py``); bulk bytes (a state value, a
blob, a shared-memory descriptor) in the payload frame, untouched, so the node hands what it
received to the backend without a copy. The node and the SDK both encode and decode through
these definitions; docs/protocol.md's table is checked against them
(tests/core/test_protocol_calls.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar, cast

import msgpack

from ..errors import (
    BackendUnavailable,
    BadDescriptor,
    Conflict,
    FabricError,
    Fenced,
    InvalidSubject,
    LeaseExpired,
    LeaseHeld,
    NotAuthorized,
    NotFound,
    PayloadTooLarge,
    PoolExhausted,
    RemoteProtocolError,
    StateError,
    Timeout,
)
from ._codec import HeaderMessage, PayloadMessage, decode_fields, encode_fields, fields_of
from ._names import STATE_PREFIX

__all__ = [
    "AGENT_HOLD",
    "AGENT_RELEASE",
    "CONTROL_CALLS",
    "DIR_INVALIDATE",
    "NODE_BARRIER",
    "NODE_RESOLVE",
    "NODE_STATS",
    "POOL_ALLOC",
    "POOL_RELEASE",
    "STATE_ACQUIRE",
    "STATE_CALLS",
    "STATE_DELETE",
    "STATE_DROP_BLOB",
    "STATE_GET",
    "STATE_OPEN_BLOB",
    "STATE_PUT",
    "STATE_READ",
    "STATE_RELEASE",
    "STATE_RENEW",
    "STATE_RESTORE",
    "STATE_RESTORE_PIECE",
    "STATE_SHARE",
    "STATE_STATS",
    "AcquireAnswer",
    "AcquireRequest",
    "AllocRequest",
    "BlobRef",
    "ControlCall",
    "DirectTarget",
    "Empty",
    "GetAnswer",
    "KeyRequest",
    "NodeStatus",
    "OpenBlobAnswer",
    "PieceAnswer",
    "PieceRequest",
    "ReadAnswer",
    "ReadRequest",
    "ReleaseAnswer",
    "ReleaseRequest",
    "RenewAnswer",
    "RenewRequest",
    "ResolveAnswer",
    "ResolveRequest",
    "RestoreRequest",
    "ShareAnswer",
    "StateStatsAnswer",
    "VersionAnswer",
    "WriteRequest",
    "control_call",
]

Req = TypeVar("Req")
Ans = TypeVar("Ans")


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Empty(HeaderMessage):
    """No arguments, or an answer that only says "done"."""


@dataclass(frozen=True, slots=True)
class ResolveRequest(HeaderMessage):
    #: The subject a request is about to be sent to.
    subject: str
    #: The asking request's span, so a tracing node records its answer in that trace.
    traceparent: str = ""
    #: The asker can reach responders on other hosts over TCP with a grant (older SDKs
    #: leave it out and are answered "not direct" whenever a responder is remote).
    remote: bool = False


class DirectTarget(NamedTuple):
    """One local responder a requester may reach directly (a msgpack array on the wire)."""

    #: The responder's direct socket (abstract namespace).
    path: str
    #: Its subscription id, echoed on the request.
    sid: int
    #: ``"<pattern> <queue>"`` for a queue member, ``""`` for a plain subscriber.
    group: str
    #: The responder's agent name (``Msg.sender`` of a direct reply).
    name: str = ""
    #: For a responder on another host (``path`` is ``tcp://host:port``): the grant its node
    #: signed for this requester and subject (fabric/grants.py); "" for a local one.
    grant: str = ""
    #: The node a responder on another host is attached to (``Msg.sender`` of its replies).
    node: str = ""


@dataclass(frozen=True, slots=True)
class ResolveAnswer(PayloadMessage):
    """The directory's answer; usable until the node sends ``$dir.invalidate``."""

    WIRE = "`{direct, targets?: [[path, sid, group, name, grant?, node?]], span?}`"

    #: False whenever some responder is not reachable directly (remote agents, other nodes).
    direct: bool
    targets: tuple[DirectTarget, ...] = ()
    #: The node's span for this lookup, when it traces.
    span: str | None = None

    def to_payload(self) -> bytes:
        out: dict[str, Any] = {"direct": self.direct}
        if self.direct:
            # A local target keeps its four fields: older SDKs read exactly those.
            out["targets"] = [t if t.grant or t.node else t[:4] for t in self.targets]
        if self.span is not None:
            out["span"] = self.span
        return cast(bytes, msgpack.packb(out))

    @classmethod
    def from_payload(cls, payload: Any, subject: str) -> ResolveAnswer:
        raw = _unpack_map(payload, subject)
        direct = raw.get("direct")
        span = raw.get("span")
        if type(direct) is not bool or not (span is None or type(span) is str):
            raise RemoteProtocolError(f"malformed answer to {subject}")
        if not direct:
            return cls(False, (), span)
        targets = raw.get("targets")
        if not isinstance(targets, list):
            raise RemoteProtocolError(f"answer to {subject} has no targets")
        out = []
        for t in targets:
            if not isinstance(t, list) or len(t) not in (3, 4, 5, 6):
                raise RemoteProtocolError(f"malformed target in answer to {subject}")
            path, sid, group, *name = t
            if type(path) is not str or type(sid) is not int or type(group) is not str or not all(
                type(n) is str for n in name
            ):
                raise RemoteProtocolError(f"malformed target in answer to {subject}")
            out.append(DirectTarget(path, sid, group, *name))
        return cls(True, tuple(out), span)


@dataclass(frozen=True, slots=True)
class NodeStatus(PayloadMessage):
    """What ``fabric status`` shows: the node's counters, sessions, mesh and pool."""

    WIRE = "msgpack map (`Node.status()`)"

    status: dict[str, Any]

    def to_payload(self) -> bytes:
        return cast(bytes, msgpack.packb(self.status))

    @classmethod
    def from_payload(cls, payload: Any, subject: str) -> NodeStatus:
        return cls(_unpack_map(payload, subject))


@dataclass(frozen=True, slots=True)
class AllocRequest(HeaderMessage):
    #: Bytes the slot must hold.
    size: int


@dataclass(frozen=True, slots=True)
class BlobRef(HeaderMessage):
    #: A blob's content address (SHA-256 hex).
    ref: str


@dataclass(frozen=True, slots=True)
class ShareAnswer(HeaderMessage):
    ref: str


@dataclass(frozen=True, slots=True)
class OpenBlobAnswer(HeaderMessage):
    size: int


@dataclass(frozen=True, slots=True)
class StateStatsAnswer(HeaderMessage):
    """Field for field ``fabric.state.StateStats``."""

    keys: int
    private_bytes: int
    blobs: int
    blob_bytes: int
    shared_saved_bytes: int


@dataclass(frozen=True, slots=True)
class KeyRequest(HeaderMessage):
    #: The agent's own key (the node scopes it by the agent's name).
    key: str


@dataclass(frozen=True, slots=True)
class WriteRequest(HeaderMessage):
    key: str
    #: Fencing token of the lease held on ``key``, if any.
    token: int | None = None
    #: Compare-and-set: the version the key must have (0: must not exist).
    expect: int | None = None


@dataclass(frozen=True, slots=True)
class VersionAnswer(HeaderMessage):
    version: int


@dataclass(frozen=True, slots=True)
class GetAnswer(HeaderMessage):
    version: int
    #: The key's fencing floor, from backends that keep one (migration carries it over).
    fence: int | None = None


@dataclass(frozen=True, slots=True)
class RestoreRequest(HeaderMessage):
    key: str
    version: int
    fence: int


@dataclass(frozen=True, slots=True)
class ReadRequest(HeaderMessage):
    """A piece of a value, for carrying it between hosts without one frame holding it all."""

    key: str
    #: First byte wanted.
    offset: int
    #: Bytes wanted at most (fewer at the value's end).
    length: int


@dataclass(frozen=True, slots=True)
class ReadAnswer(HeaderMessage):
    #: The whole value's size (the payload holds only the piece asked for).
    size: int
    version: int
    #: The key's fencing floor, from backends that keep one.
    fence: int | None = None


@dataclass(frozen=True, slots=True)
class PieceRequest(HeaderMessage):
    """One piece of a value being adopted; the pieces of one value come in order."""

    key: str
    #: The whole value's size.
    size: int
    #: Where this piece starts (0 starts the value over).
    offset: int
    version: int
    fence: int


@dataclass(frozen=True, slots=True)
class PieceAnswer(HeaderMessage):
    """``received`` after an earlier piece, ``version`` once the last one made the key."""

    received: int | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class AcquireRequest(HeaderMessage):
    key: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class AcquireAnswer(HeaderMessage):
    #: The fencing token, larger than any before on this key.
    token: int
    #: Lease lifetime left, measured by the node.
    expires_ms: int


@dataclass(frozen=True, slots=True)
class RenewRequest(HeaderMessage):
    key: str
    token: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class RenewAnswer(HeaderMessage):
    expires_ms: int


@dataclass(frozen=True, slots=True)
class ReleaseRequest(HeaderMessage):
    key: str
    token: int


@dataclass(frozen=True, slots=True)
class ReleaseAnswer(HeaderMessage):
    #: False when the lease had already ended or been superseded.
    released: bool


def _unpack_map(payload: Any, subject: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(payload, raw=False)
    except Exception:
        raise RemoteProtocolError(f"answer to {subject} is not msgpack") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"answer to {subject} must be a map")
    return value


# -- calls ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlCall(Generic[Req, Ans]):
    """One control call. ``encode_*`` build what goes on the wire, ``decode_*`` take
    untrusted headers (or payload) back to the typed message."""

    subject: str
    request: type[Req]
    answer: type[Ans]
    #: Typed errors the answer may be (besides ``Timeout`` and ``ConnectionLost`` locally).
    errors: tuple[type[FabricError], ...]
    #: One line for docs/protocol.md.
    doc: str
    #: What the request's payload frame carries ("" for nothing).
    request_payload: str = ""
    #: What the answer's payload frame carries ("" for nothing).
    answer_payload: str = ""
    #: An argument-less frame carries a nil header map (``$node.*``, ``$agent.*``,
    #: ``$pool.*``); ``$state.*`` always carries a map, even an empty one.
    nil_when_empty: bool = True
    #: False for notifications that get no answer (``$pool.release``, ``$dir.invalidate``).
    answered: bool = True
    #: Who sends the request.
    sender: str = "agent"

    def encode_request(self, request: Req) -> dict[str, str] | None:
        """The user headers of the call frame."""
        return encode_fields(request, self.nil_when_empty)

    def decode_request(self, headers: dict[str, str] | None) -> Req:
        """Raises ``RemoteProtocolError``: a header missing or not of its type."""
        return decode_fields(self.request, headers, self.subject)

    def encode_answer(self, answer: Ans) -> tuple[dict[str, str] | None, bytes]:
        """The answer frame's user headers, and its payload when the answer is a map there
        (``b""`` otherwise: the caller adds its bulk bytes, if any)."""
        if isinstance(answer, PayloadMessage):
            return None, answer.to_payload()
        return encode_fields(answer, self.nil_when_empty), b""

    def decode_answer(self, headers: dict[str, str] | None, payload: Any = b"") -> Ans:
        """Raises ``RemoteProtocolError``: the node's answer is malformed."""
        if issubclass(self.answer, PayloadMessage):
            return cast(Ans, self.answer.from_payload(payload, self.subject))
        return decode_fields(self.answer, headers, self.subject)

    @property
    def op(self) -> str:
        """``get`` for ``$state.get``: the part after the family prefix."""
        return self.subject.partition(".")[2]

    def describe(self, message: type, payload: str = "") -> str:
        """The fields of ``message`` (and what the payload carries) as docs/protocol.md
        lists them."""
        if issubclass(message, PayloadMessage):
            return f"payload: {message.WIRE}"
        parts = [", ".join(f.describe() for f in fields_of(message))]
        parts.append(f"payload: {payload}" if payload else "")
        return "; ".join(p for p in parts if p) or "—"

    def doc_row(self) -> list[str]:
        """This call's row in docs/protocol.md's table (after the subject)."""
        return [
            self.describe(self.request, self.request_payload),
            self.describe(self.answer, self.answer_payload) if self.answered else "(none)",
            ", ".join(e.code for e in self.errors) or "—",
            self.doc,
        ]


_STATE: tuple[type[FabricError], ...] = (RemoteProtocolError, BackendUnavailable, Timeout)

NODE_STATS = ControlCall(
    "$node.stats", Empty, NodeStatus, (), "the node's status (what `fabric status` shows)"
)
NODE_RESOLVE = ControlCall(
    "$node.resolve",
    ResolveRequest,
    ResolveAnswer,
    (RemoteProtocolError, InvalidSubject, NotAuthorized),
    "directory: the local agents serving a subject, at their direct sockets",
)
NODE_BARRIER = ControlCall(
    "$node.barrier",
    Empty,
    Empty,
    (Timeout,),
    "answered once every peer node processed what this node sent it so far",
)
AGENT_HOLD = ControlCall(
    "$agent.hold", Empty, Empty, (), "queue this session's deliveries (migration)"
)
AGENT_RELEASE = ControlCall(
    "$agent.release",
    Empty,
    Empty,
    (),
    "send what was held, in order, then answer",
)
POOL_ALLOC = ControlCall(
    "$pool.alloc",
    AllocRequest,
    Empty,
    (RemoteProtocolError, PoolExhausted, PayloadTooLarge),
    "lease a shared-memory slot",
    answer_payload="36-byte slot descriptor",
)
POOL_RELEASE = ControlCall(
    "$pool.release",
    Empty,
    Empty,
    (BadDescriptor,),
    "give slots back (ERR only when some were not held)",
    request_payload="release batch of descriptors",
    answered=False,
)
DIR_INVALIDATE = ControlCall(
    "$dir.invalidate",
    Empty,
    Empty,
    (),
    "node → agent: interest changed, forget cached `$node.resolve` answers",
    answered=False,
    sender="node",
)


def _state(
    op: str,
    request: type[Req],
    answer: type[Ans],
    errors: tuple[type[FabricError], ...],
    doc: str,
    request_payload: str = "",
    answer_payload: str = "",
) -> ControlCall[Req, Ans]:
    return ControlCall(
        STATE_PREFIX + op,
        request,
        answer,
        _STATE + errors,
        doc,
        request_payload,
        answer_payload,
        nil_when_empty=False,
    )


STATE_SHARE = _state(
    "share", Empty, ShareAnswer, (PayloadTooLarge,), "store an immutable blob", "the blob"
)
STATE_OPEN_BLOB = _state(
    "open_blob", BlobRef, OpenBlobAnswer, (NotFound,), "a blob's bytes", answer_payload="the blob"
)
STATE_DROP_BLOB = _state("drop_blob", BlobRef, Empty, (NotFound,), "drop one hold on a blob")
STATE_STATS = _state("stats", Empty, StateStatsAnswer, (), "the backend's memory accounting")
STATE_PUT = _state(
    "put",
    WriteRequest,
    VersionAnswer,
    (Conflict, Fenced, LeaseExpired, PayloadTooLarge),
    "write a value (compare-and-set, fenced)",
    "the value (or a slot descriptor, flag SHM)",
)
STATE_GET = _state(
    "get",
    KeyRequest,
    GetAnswer,
    (NotFound,),
    "read a value",
    answer_payload="the value (or a slot descriptor, flag SHM)",
)
STATE_RESTORE = _state(
    "restore",
    RestoreRequest,
    VersionAnswer,
    (StateError,),
    "adopt a key at a version and fencing floor (migration between stores)",
    "the value",
)
STATE_READ = _state(
    "read",
    ReadRequest,
    ReadAnswer,
    (NotFound,),
    "read a piece of a value (migration between hosts)",
    answer_payload="bytes `[offset, offset + length)` of the value",
)
STATE_RESTORE_PIECE = _state(
    "restore_piece",
    PieceRequest,
    PieceAnswer,
    (StateError, PayloadTooLarge),
    "adopt a key piece by piece, in order (migration between hosts)",
    "the piece",
)
STATE_DELETE = _state(
    "delete", WriteRequest, Empty, (NotFound, Conflict, Fenced, LeaseExpired), "remove a key"
)
STATE_ACQUIRE = _state(
    "acquire", AcquireRequest, AcquireAnswer, (LeaseHeld,), "take the lease on a key"
)
STATE_RENEW = _state(
    "renew", RenewRequest, RenewAnswer, (Fenced, LeaseExpired), "extend a live lease"
)
STATE_RELEASE = _state("release", ReleaseRequest, ReleaseAnswer, (), "give a lease up")

#: Every control call, by subject.
CONTROL_CALLS: dict[str, ControlCall[Any, Any]] = {
    c.subject: c
    for c in (
        NODE_STATS,
        NODE_RESOLVE,
        NODE_BARRIER,
        AGENT_HOLD,
        AGENT_RELEASE,
        POOL_ALLOC,
        POOL_RELEASE,
        DIR_INVALIDATE,
        STATE_SHARE,
        STATE_OPEN_BLOB,
        STATE_DROP_BLOB,
        STATE_STATS,
        STATE_PUT,
        STATE_GET,
        STATE_RESTORE,
        STATE_READ,
        STATE_RESTORE_PIECE,
        STATE_DELETE,
        STATE_ACQUIRE,
        STATE_RENEW,
        STATE_RELEASE,
    )
}
#: The ``$state.*`` calls, by operation (``get``, ``put``, …).
STATE_CALLS: dict[str, ControlCall[Any, Any]] = {
    c.op: c for c in CONTROL_CALLS.values() if c.subject.startswith(STATE_PREFIX)
}


def control_call(subject: str) -> ControlCall[Any, Any]:
    """The definition of ``subject``.

    Raises:
        RemoteProtocolError: no control call has that subject.
    """
    call = CONTROL_CALLS.get(subject)
    if call is None:
        raise RemoteProtocolError(f"unknown control subject {subject[:200]!r}")
    return call

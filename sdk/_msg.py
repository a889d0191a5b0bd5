"""``Msg``: what an agent receives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgpack
from pydantic import BaseModel

from fabric.errors import FabricError, RemoteError, error_from_wire
from fabric.wire import Status

from ._payload import Payload, decode_model

if TYPE_CHECKING:
    from fabric.transports import Link

    from ._agent import Agent

__all__ = ["Msg", "Sender", "messages_like"]

M = TypeVar("M", bound=BaseModel)


class Sender(NamedTuple):
    """Who answered: stamped by the node that routed the reply (or, on a direct reply, by
    the directory the requester asked), never taken from the responder's word."""

    #: The responding agent's name.
    agent: str
    #: The node that agent is connected to.
    node: str

    def __str__(self) -> str:
        return f"{self.agent}@{self.node}"


class Msg:
    """One delivered message (or reply, or stream chunk)."""

    __slots__ = (
        "__weakref__",
        "_agent",
        "_conn",
        "_release",
        "_via",
        "data",
        "deadline",
        "headers",
        "msg_id",
        "reply",
        "sender",
        "seq",
        "status",
        "subject",
        "traceparent",
    )

    def __init__(
        self,
        subject: str,
        data: bytes | memoryview,
        *,
        headers: dict[str, str] | None = None,
        reply: str = "",
        deadline: float | None = None,
        status: int = 0,
        seq: int = 0,
        msg_id: int = 0,
        traceparent: str = "",
        agent: Agent | None = None,
        via: Link | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.subject = subject
        #: The payload, bytes-like (a memoryview for large or shared-memory payloads).
        self.data = data
        self.headers: dict[str, str] = headers or {}
        #: Where a reply goes; "" when the sender expects none.
        self.reply = reply
        #: Absolute ``time.monotonic()`` deadline carried by the message, or None.
        self.deadline = deadline
        self.status = status
        self.seq = seq
        self.msg_id = msg_id
        self.traceparent = traceparent
        #: Who sent this reply (agent and node), vouched for by the fabric; None for
        #: messages that are not replies.
        self.sender = sender
        self._agent = agent
        #: Gives a shared-memory slot back; set when ``data`` is a view over the pool.
        self._release: Callable[[], Any] | None = None
        #: The direct link a request came in on; its reply goes back the same way.
        self._via = via
        #: The node connection it came through (after a migration, its reply still leaves
        #: through the node that routed the request: only that node may accept it).
        self._conn: Any = None

    @property
    def shared(self) -> bool:
        """Whether ``data`` is a read-only view over the node's shared memory."""
        return self._release is not None

    def release(self) -> None:
        """Done with ``data``: its shared-memory slot may be reused. Idempotent.

        Views derived from ``data`` (a numpy array, a slice) must not be used afterwards;
        copy what you keep. Messages that are not shared need no release.
        """
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Msg:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Msg:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Msg {self.subject!r} {len(self.data)} bytes>"

    def time_left(self) -> float | None:
        """Seconds until the sender's deadline, or None when it set none."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def parse(self, model: type[M]) -> M:
        """Validate the payload into a pydantic model.

        Raises:
            PayloadValidationError: naming the fields that failed.
        """
        return decode_model(self.data, model, subject=self.subject)

    def text(self) -> str:
        """The payload as UTF-8 text."""
        return bytes(self.data).decode()

    @property
    def error(self) -> FabricError | None:
        """The typed error a responder sent instead of a reply, else None."""
        if self.status != Status.ERROR:
            return None
        try:
            code, message = msgpack.unpackb(self.data, raw=False)
            return error_from_wire(str(code), str(message), subject=self.subject)
        except Exception:
            return RemoteError("responder failed (undecodable error)", subject=self.subject)

    async def respond(self, data: Payload = b"", *, headers: dict[str, str] | None = None) -> None:
        """Reply to the sender.

        Raises:
            LocalProtocolError: when the message carries no reply subject.
            ConnectionLost: when the link to the node is down.
        """
        from fabric.errors import LocalProtocolError

        if not self.reply:
            raise LocalProtocolError("this message expects no reply", subject=self.subject)
        if self._agent is None:
            raise LocalProtocolError("message is not bound to an agent", subject=self.subject)
        await self._agent.publish(self.reply, data, headers=headers)

    def __getstate__(self) -> Any:
        raise TypeError("Msg is bound to a live connection and cannot be pickled")


def messages_like(
    template: Msg, datas: Iterable[bytes | memoryview], first_seq: int, status: int
) -> list[Msg]:
    """Messages that differ from ``template`` only in their data, ``status`` and ``seq``
    (numbered from ``first_seq``): the chunks of one stream batch.

    A reader pays this once per chunk, so the slots are set directly: about a third of what
    ``Msg(...)`` with its keyword arguments costs. Each gets its own empty headers map, as
    ``Msg(...)`` would give it.
    """
    new = object.__new__
    subject, headers, reply = template.subject, template.headers, template.reply
    deadline, msg_id, traceparent = template.deadline, template.msg_id, template.traceparent
    sender, agent, via, conn = template.sender, template._agent, template._via, template._conn
    out: list[Msg] = []
    append = out.append
    seq = first_seq
    for data in datas:
        msg = new(Msg)
        msg.subject = subject
        msg.data = data
        msg.headers = headers or {}
        msg.reply = reply
        msg.deadline = deadline
        msg.status = status
        msg.seq = seq
        msg.msg_id = msg_id
        msg.traceparent = traceparent
        msg.sender = sender
        msg._agent = agent
        msg._release = None
        msg._via = via
        msg._conn = conn
        append(msg)
        seq += 1
    return out

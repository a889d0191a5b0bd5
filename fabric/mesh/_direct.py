"""Resolving across the mesh: which agents on a peer serve a subject over direct TCP.

A requester's node asks each peer with interest in the subject (CONTROL ``$mesh.resolve``,
``{subject, requester}``, ``msg_id`` numbering the ask); the peer answers
``$mesh.resolved`` with the same ``msg_id`` and ``{direct, targets?}``: its local responders'
TCP addresses, each with a grant it signed for that requester (``fabric/grants.py``), or
``direct: false`` when one of them cannot be reached that way. A peer that does not know the
call (an older node) answers nothing: the ask times out and the answer is "not direct", so
requests keep going through the mesh as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from ..errors import FabricError, RemoteProtocolError
from ..protocol import MESH_RESOLVE, MESH_RESOLVED, DirectTarget
from ..wire import Header, Kind

if TYPE_CHECKING:
    from ._mesh import Mesh

__all__ = ["RESOLVE", "RESOLVED", "MeshDirectory"]

#: How long a peer that let an ask time out is not asked again.
SILENT_S = 60.0

RESOLVE = MESH_RESOLVE
RESOLVED = MESH_RESOLVED

#: A node's answer for its own responders to (asking peer, subject, requester): targets
#: with grants, or None for "not direct".
Answerer = Callable[[str, str, str], "list[DirectTarget] | None"]


class MeshDirectory:
    """Asks peers for direct targets and answers their asks (with ``answerer``)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        #: Set by the node: its answer for its own responders (None: it never goes direct).
        self.answerer: Answerer | None = None
        self._asks: dict[int, asyncio.Future[list[DirectTarget] | None]] = {}
        #: The peer each ask went to (a peer going down answers its asks "not direct").
        self._asked: dict[int, str] = {}
        #: Peers that let an ask time out (older nodes do not know the call), and until when
        #: (loop time) they are not asked again: a mixed-version mesh pays one wait per
        #: ``SILENT_S``, and a peer that was only slow once is asked again after it.
        self._silent: dict[str, float] = {}
        self._seq = 0

    async def ask(
        self, peer: str, subject: str, requester: str, timeout: float
    ) -> list[DirectTarget] | None:
        """``peer``'s direct targets for ``subject``, or None (not direct, no answer in time,
        peer gone)."""
        loop = asyncio.get_running_loop()
        if self._silent.get(peer, 0.0) > loop.time():
            return None
        self._seq += 1
        seq = self._seq
        fut: asyncio.Future[list[DirectTarget] | None] = loop.create_future()
        self._asks[seq] = fut
        self._asked[seq] = peer
        body = msgpack.packb({"subject": subject, "requester": requester})
        try:
            frame = Header(Kind.CONTROL, subject=RESOLVE, msg_id=seq)
            if not self._mesh.send_control(peer, frame, body):
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    return await fut
            self._silent[peer] = loop.time() + SILENT_S
            return None
        finally:
            self._asks.pop(seq, None)
            self._asked.pop(seq, None)

    def peer_down(self, peer: str) -> None:
        """``peer`` is gone: its asks are answered "not direct" now, not at their deadline;
        when it comes back (perhaps upgraded) it is asked again."""
        self._silent.pop(peer, None)
        for seq, asked in list(self._asked.items()):
            fut = self._asks.get(seq)
            if asked == peer and fut is not None and not fut.done():
                fut.set_result(None)

    def control(self, peer: str, header: Header, payload: memoryview) -> None:
        """A ``$mesh.resolve`` or ``$mesh.resolved`` frame from ``peer``.

        Raises:
            RemoteProtocolError: malformed.
        """
        raw = _map(payload)
        if header.subject == RESOLVE:
            subject, requester = raw.get("subject"), raw.get("requester")
            if type(subject) is not str or type(requester) is not str:
                raise RemoteProtocolError("malformed $mesh.resolve")
            targets = None
            if self.answerer is not None:
                try:
                    targets = self.answerer(peer, subject, requester)
                except FabricError:  # an invalid subject is simply "not direct"
                    targets = None
            out: dict[str, Any] = {"direct": targets is not None}
            if targets is not None:
                out["targets"] = [list(t) for t in targets]
            answer = Header(Kind.CONTROL, subject=RESOLVED, msg_id=header.msg_id)
            self._mesh.send_control(peer, answer, msgpack.packb(out))
            return
        fut = self._asks.get(header.msg_id)
        if fut is None or fut.done():
            return  # answered after its ask timed out
        if raw.get("direct") is not True:
            fut.set_result(None)
            return
        targets_raw = raw.get("targets")
        if not isinstance(targets_raw, list):
            raise RemoteProtocolError("malformed $mesh.resolved")
        targets = []
        for t in targets_raw:
            if (
                not isinstance(t, list)
                or len(t) != 6
                or not all(type(x) is str for x in (t[0], t[2], t[3], t[4], t[5]))
                or type(t[1]) is not int
            ):
                raise RemoteProtocolError("malformed target in $mesh.resolved")
            targets.append(DirectTarget(*t))
        fut.set_result(targets)


def _map(payload: memoryview) -> dict[str, Any]:
    try:
        raw = msgpack.unpackb(payload)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise RemoteProtocolError("malformed mesh resolve frame") from None
    if not isinstance(raw, dict):
        raise RemoteProtocolError("malformed mesh resolve frame")
    return raw


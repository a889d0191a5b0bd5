"""PUB headers encoded from a per-subject cache: the SDK's per-publish path.

``encode_header(Header(PUB, ...))`` builds a 13-field dataclass and a 13-tuple for every
message, though an agent publishing to one subject repeats all but the message id. The
header is a msgpack array of fixed arity, so its bytes are the array marker followed by each
field packed on its own: the leading part (version, kind, subject) is packed once per
subject and the checked subject remembered with it, the fields that vary are packed per
message. The bytes are the same as ``encode_header`` gives (tests/core/test_pubheader.py).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from fabric.protocol import INBOX_PREFIX
from fabric.subjects import validate_subject
from fabric.wire import PROTOCOL_VERSION, Kind

__all__ = ["PubHeaders"]

_packer = msgpack.Packer(use_bin_type=True)
_pack: Callable[[Any], bytes] = _packer.pack
# Array of 13, then the version and PUB: positive fixints, one byte each.
_LEAD = _pack((PROTOCOL_VERSION, int(Kind.PUB), "", "", 0, 0, "", None, 0, "", 0, 0, 0))[:3]
_EMPTY = _pack("")
# timeout_ms 0, traceparent "", headers None, sid 0, queue "", status 0, seq 0, flags 0.
_PLAIN_TAIL = _pack((0, "", None, 0, "", 0, 0, 0))[1:]


class PubHeaders:
    """Encoded PUB headers, their leading bytes cached per subject.

    ``check`` validates a subject once and remembers it; ``encode`` gives the same bytes as
    ``encode_header`` of the equivalent ``Header``. Reply inboxes are one-off subjects, so
    they are checked and encoded each time rather than filling the cache; the cache is
    bounded and starts over when full (the hot subjects fill it again).
    """

    __slots__ = ("_leads", "_limit")

    def __init__(self, limit: int = 4096) -> None:
        self._leads: dict[str, bytes] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._leads)

    def check(self, subject: str) -> None:
        """Validate a literal subject (``validate_subject``), cached.

        Raises:
            InvalidSubject: as ``validate_subject``.
        """
        if subject not in self._leads:
            self._lead(subject)

    def encode(
        self,
        subject: str,
        reply: str,
        msg_id: int,
        timeout_ms: int = 0,
        traceparent: str = "",
        headers: dict[str, str] | None = None,
        status: int = 0,
        seq: int = 0,
        flags: int = 0,
    ) -> bytes:
        """The wire header of a PUB with these fields (``sid`` 0 and ``queue`` "", as every
        PUB has). The subject is not validated here: ``check`` it first."""
        lead = self._leads.get(subject)
        if lead is None:
            lead = _LEAD + _pack(subject)
        if timeout_ms or traceparent or headers is not None or status or seq or flags:
            # The ten fields after the subject packed as an array, less the array's one-byte marker.
            return lead + _pack(
                (reply, msg_id, timeout_ms, traceparent, headers, 0, "", status, seq, flags)
            )[1:]
        return lead + (_pack(reply) if reply else _EMPTY) + _pack(msg_id) + _PLAIN_TAIL

    def _lead(self, subject: str) -> bytes:
        validate_subject(subject)
        lead = _LEAD + _pack(subject)
        if not subject.startswith(INBOX_PREFIX):
            if len(self._leads) >= self._limit:
                self._leads.clear()
            self._leads[subject] = lead
        return lead

"""Grants: a node's signed word that a requester may reach a responder directly.

A requester on another host reaches a responder over a TCP link of the responder's own
(``sdk/_remote_direct.py``), skipping both nodes. Its node checked the permissions when it
resolved the subject; the responder cannot ask anybody without a round trip, so the word
travels with the requester: a ``Grant`` (requester, subject, responder address, expiry),
MAC'd by the responder's node with a key derived for that responder alone
(``responder_key``), which the responder got in its WELCOME. The responder verifies the MAC
and the expiry locally (``verify``). A responder can forge grants only for itself, and a
stolen grant names its requester's subject and runs out.

Expiry is wall-clock seconds (``time.time()``), since the two hosts share no monotonic clock:
the nodes' clocks must agree to well within a grant's lifetime (NTP does).

Pure: no I/O; the caller passes ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import msgpack

from .errors import GrantRefused

__all__ = ["Grant", "GrantRefused", "peek", "responder_key", "sign", "verify"]

_MAC_BYTES = 16
_KEY_CONTEXT = b"agent-fabric grant key v1\0"


@dataclass(frozen=True, slots=True)
class Grant:
    """Who may send what to which responder, until when."""

    requester: str
    subject: str
    #: The responder's direct TCP address (``tcp://host:port``): a grant opens one door.
    responder: str
    #: Wall-clock second after which the responder refuses it.
    expires: float

    def body(self) -> bytes:
        return bytes(msgpack.packb([self.requester, self.subject, self.responder, self.expires]))


def responder_key(node_secret: bytes, responder: str, session: int = 0) -> bytes:
    """The key a node gives the responder listening at ``responder`` (and signs with).
    Derived, not stored: the node recomputes it for every grant it signs. ``session`` (the
    responder's session id on its node) makes it one agent's: an agent that once claimed an
    address, and kept the key, cannot sign for whoever listens there later."""
    material = _KEY_CONTEXT + responder.encode() + b"\0" + str(session).encode()
    return hmac.new(node_secret, material, hashlib.sha256).digest()


def sign(grant: Grant, key: bytes) -> str:
    """The grant as a token a requester carries (URL-safe text)."""
    body = grant.body()
    mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(mac + body).decode()


def peek(token: str) -> Grant:
    """The grant in a token, unverified (a requester reads its own grants' expiry).

    Raises:
        GrantRefused: the token is malformed.
    """
    return _decode(token)[1]


def verify(token: str, key: bytes, responder: str, now: float) -> Grant:
    """The grant in ``token`` if ``key`` signed it for ``responder`` and it holds at ``now``.

    Raises:
        GrantRefused: malformed, signed with another key, for another responder, or expired.
    """
    mac, grant, body = _decode_with_body(token)
    expected = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise GrantRefused("the grant was not signed for this responder")
    if grant.responder != responder:
        raise GrantRefused("the grant names another responder")
    if now >= grant.expires:
        raise GrantRefused("the grant expired", subject=grant.subject)
    return grant


def _decode(token: str) -> tuple[bytes, Grant]:
    mac, grant, _ = _decode_with_body(token)
    return mac, grant


def _decode_with_body(token: str) -> tuple[bytes, Grant, bytes]:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        fields = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise GrantRefused("malformed grant") from None
    if len(mac) != _MAC_BYTES or not isinstance(fields, list) or len(fields) != 4:
        raise GrantRefused("malformed grant")
    requester, subject, responder, expires = fields
    if not (
        type(requester) is str
        and type(subject) is str
        and type(responder) is str
        and type(expires) in (int, float)
    ):
        raise GrantRefused("malformed grant")
    return mac, Grant(requester, subject, responder, float(expires)), body

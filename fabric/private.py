"""Subjects that belong to one agent: its reply inboxes and its control subject.

Rules (the node enforces them for its own sessions; nodes of a mesh trust each other):

1. An agent's inboxes live under ``_INBOX.<token>.`` where ``<token>`` is derived from the
   agent's name (``inbox_token``). Only a session of that name may subscribe to a pattern
   that starts with ``_INBOX.``, and only under its own token: ``_INBOX.>``, another
   agent's token or a wildcard in the token position is refused (``NotAuthorized``).
2. A pattern that does not start with ``_INBOX.`` (``>``, ``*.>``, ``*.*``) never matches an
   inbox subject when messages are routed; so with rule 1, only the owner reads its inbox.
3. A session may publish into an inbox only its own, or one it was handed as the ``reply``
   of a message the node delivered to it (a *grant*, valid until that message's deadline
   plus a grace, or ``GRANT_TTL_S`` when it had none). A forged reply is ``NotAuthorized``.
   Grants are per session and bounded; the oldest go first.
4. An agent's own control subject (``control_subject``) is always open to it, whatever the
   permissions file says: operators must be able to reach it (``fabric agent migrate``).

With an auth file, names are authenticated, so (1) binds inboxes to an identity. Without
one, any agent may *claim* any name; the privacy unit is still the name, never a wildcard.

``ReplyGrants`` is pure bookkeeping (``now`` is passed in); the node drives it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any

import msgpack

from .errors import RemoteProtocolError
from .protocol import INBOX_PREFIX, SENDER_HEADER, migrate_subject

__all__ = [
    "GRANT_GRACE_S",
    "GRANT_TTL_S",
    "INBOX_PREFIX",
    "SENDER_HEADER",
    "ReplyGrants",
    "control_subject",
    "decode_names",
    "encode_names",
    "inbox_root",
    "inbox_token",
    "is_control_subject_of",
    "owns_inbox_pattern",
    "parse_sender",
]

#: Grant lifetime when the delivered message carried no deadline.
GRANT_TTL_S = 300.0
#: Added to a message's deadline: a reply sent at the deadline still crosses the mesh.
GRANT_GRACE_S = 2.0
#: Grants one session may hold; past it the oldest are forgotten (their replies refused).
MAX_GRANTS_PER_SESSION = 16_384


def inbox_token(name: str) -> str:
    """The inbox token of agent ``name``: one subject token, stable across nodes."""
    return hashlib.sha256(name.encode()).hexdigest()[:20]


def inbox_root(name: str) -> str:
    """``_INBOX.<token>``: every inbox of ``name`` is below it."""
    return INBOX_PREFIX + inbox_token(name)


def control_subject(name: str) -> str:
    """The subject an operator uses to ask agent ``name`` to migrate."""
    return migrate_subject(name)


def is_control_subject_of(name: str, pattern: str) -> bool:
    """Whether ``pattern`` is exactly agent ``name``'s own control subject."""
    return pattern == control_subject(name)


def owns_inbox_pattern(root: str, pattern: str) -> bool:
    """Whether a subscription ``pattern`` (starting with ``_INBOX.``) stays under ``root``.

    ``root`` is the session's ``inbox_root``; ``_INBOX.<token>`` itself or anything below it
    (wildcards after the token included) is owned; anything else is not.
    """
    return pattern == root or (pattern.startswith(root) and pattern[len(root)] == ".")


def parse_sender(value: str) -> tuple[str, str]:
    """``agent@node`` -> (agent, node); node names cannot hold ``@``, agent names can."""
    agent, _, node = value.rpartition("@")
    return agent, node


def encode_names(names: list[str] | None) -> bytes:
    """The payload of a STATUS ROUTED that answers a gather: who was reached
    (``agent@node`` each); empty when there are none to tell."""
    return msgpack.packb(names) if names else b""


def decode_names(payload: Any) -> list[str]:
    """Inverse of ``encode_names`` for an untrusted payload.

    Raises:
        RemoteProtocolError: not a list of strings, or more than 65,536 of them.
    """
    if not len(payload):
        return []
    try:
        value = msgpack.unpackb(payload, raw=False, max_array_len=65_536)
    except Exception:
        raise RemoteProtocolError("responder names are not msgpack") from None
    if not isinstance(value, list) or not all(type(v) is str for v in value):
        raise RemoteProtocolError("responder names must be a list of strings")
    return value


class ReplyGrants:
    """Which reply subjects each session may publish into, and until when.

    Not thread-safe; called from the node's event loop only.
    """

    def __init__(self, per_session: int = MAX_GRANTS_PER_SESSION) -> None:
        self._per_session = per_session
        self._grants: dict[Hashable, dict[str, float]] = {}

    def __len__(self) -> int:
        return sum(len(g) for g in self._grants.values())

    def grant(self, session: Hashable, reply: str, expires: float) -> None:
        """``session`` was handed ``reply``: it may publish there until ``expires``."""
        grants = self._grants.get(session)
        if grants is None:
            grants = self._grants[session] = {}
        elif len(grants) >= self._per_session and reply not in grants:
            del grants[next(iter(grants))]  # the oldest; bounded memory over politeness
        old = grants.get(reply)
        if old is None or old < expires:
            grants[reply] = expires

    def allowed(self, session: Hashable, subject: str, now: float) -> bool:
        """Whether ``session`` holds a live grant for ``subject``."""
        grants = self._grants.get(session)
        if grants is None:
            return False
        expires = grants.get(subject)
        if expires is None:
            return False
        if expires < now:
            del grants[subject]
            return False
        return True

    def forget(self, session: Hashable) -> None:
        """The session is gone: its grants with it."""
        self._grants.pop(session, None)

    def sweep(self, now: float) -> int:
        """Drop expired grants; returns how many."""
        dropped = 0
        for session, grants in list(self._grants.items()):
            for reply, expires in list(grants.items()):
                if expires < now:
                    del grants[reply]
                    dropped += 1
            if not grants:
                del self._grants[session]
        return dropped

"""Admitting a session: its HELLO (who it is, what this node offers it: the WELCOME), and
which inboxes it may publish into or ask replies into (fabric/private.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgpack

from .errors import NotAuthorized, RemoteProtocolError
from .private import SENDER_HEADER, inbox_root, owns_inbox_pattern
from .protocol import Header, Kind, WelcomeKey, WelcomePath
from .session import Session
from .transports import StreamLink

if TYPE_CHECKING:
    from .node import Node, _SessionLink

_MAX_CONTROL_BYTES = 1024 * 1024
#: Largest frame a connection may send before its HELLO is accepted (a HELLO is a few
#: hundred bytes): an unauthenticated peer can make the node hold almost nothing.
HANDSHAKE_MAX_PAYLOAD = 64 * 1024


def hello(node: Node, bound: _SessionLink, header: Header, payload: memoryview) -> None:
    info = _decode_map(payload)
    name = info.get("name")
    labels = info.get("labels") or {}
    if type(name) is not str or not name or not isinstance(labels, dict):
        raise RemoteProtocolError("HELLO needs a name and a map of labels")
    labels = {str(k): str(v) for k, v in labels.items()}
    if node.auth is not None:
        node.auth.authenticate(name, info.get("credential"))
    bound.session.activate(name, labels, node.clock())
    bound.session.inbox = inbox_root(name)
    if isinstance(bound.link, StreamLink):
        bound.link.set_max_payload(node.settings.max_payload)
    direct = info.get("direct")
    if isinstance(direct, str) and isinstance(bound.link, StreamLink):
        bound.session.direct = direct
    direct_tcp = info.get("direct_tcp")
    if isinstance(direct_tcp, str) and direct_tcp.startswith("tcp://"):
        bound.session.direct_tcp = direct_tcp
    welcome = {
        WelcomeKey.NODE: node.settings.name,
        WelcomeKey.SITE: node.settings.site,
        WelcomeKey.SESSION: bound.session.id,
        WelcomeKey.MAX_PAYLOAD: node.settings.max_payload,
        WelcomeKey.HEARTBEAT: node.settings.heartbeat_interval,
        WelcomeKey.STATE: state_identity(node),
        # Where this agent's inboxes must live (fabric/private.py); clients that do not
        # derive it themselves (the browser SDK) take it from here.
        WelcomeKey.INBOX: bound.session.inbox,
    }
    local = isinstance(bound.link, StreamLink)
    if node.pool is not None and local:
        # Only agents on this host (the Unix socket) can map the pool.
        welcome[WelcomeKey.POOL] = node.pool.welcome(bound.session.id)
    # What this session may use, so the SDK need not guess from its URL (older SDKs
    # ignore the field; docs/protocol.md).
    welcome[WelcomeKey.PATHS] = {
        WelcomePath.SHM: WelcomeKey.POOL in welcome,
        WelcomePath.DIRECT: bool(bound.session.direct),
    }
    grant_key = node.direct_grants.welcome_key(bound.session)
    if grant_key is not None:
        welcome[WelcomeKey.GRANT_KEY] = grant_key
    node._send(bound, Header(Kind.WELCOME, msg_id=header.msg_id), msgpack.packb(welcome))


def state_identity(node: Node) -> str:
    """Which state store this node serves: agents moving between two nodes with the same
    identity find their state in place; otherwise they carry it over."""
    s = node.settings
    if s.state_backend == "redis":
        return f"redis:{s.state_url}#{s.state_namespace}"
    return f"embedded:{s.name}:{os.getpid()}"


def check_reply(node: Node, session: Session, header: Header) -> None:
    """A publish into an inbox: the session's own, or one it was handed as a ``reply``.
    The responder's identity is stamped on it (``SENDER_HEADER``), replacing any claim.

    Raises:
        NotAuthorized: a forged reply (the request was never routed to this session).
    """
    check_inbox(
        node, session, header.subject, "only a responder the request was routed to may reply"
    )
    headers = dict(header.headers) if header.headers else {}
    headers[SENDER_HEADER] = f"{session.name}@{node.settings.name}"
    header.headers = headers


def check_reply_to(node: Node, session: Session, reply: str) -> None:
    """A message may ask for replies only into the sender's own inbox (or one it may
    answer into): otherwise it could have a real responder answer someone else's pending
    request with content of its choosing (a reflected forgery).

    Raises:
        NotAuthorized: ``reply`` is another agent's inbox.
    """
    check_inbox(node, session, reply, "replies can only be asked for into the sender's own inbox")


def check_inbox(node: Node, session: Session, inbox: str, refusal: str) -> None:
    """``inbox`` is the session's own, or one it holds a live grant for; otherwise the
    attempt is counted (``forged_replies``) and refused.

    Raises:
        NotAuthorized: with ``refusal`` as the message.
    """
    if not owns_inbox_pattern(session.inbox, inbox) and not node.grants.allowed(
        session, inbox, node.clock()
    ):
        node.stats.forged_replies += 1
        raise NotAuthorized(refusal, subject=inbox)


def _decode_map(payload: memoryview) -> dict[str, Any]:
    if len(payload) > _MAX_CONTROL_BYTES:
        raise RemoteProtocolError(f"control payload larger than {_MAX_CONTROL_BYTES} bytes")
    try:
        value = msgpack.unpackb(payload, raw=False)
    except Exception:
        raise RemoteProtocolError("control payload is not msgpack") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("control payload must be a map")
    return value

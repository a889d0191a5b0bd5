"""Node-to-node frames. They reuse the wire header; mesh-only calls are CONTROL frames with
``$mesh.*`` subjects and msgpack payloads, so no new kind or header field was needed.

| frame                       | meaning                                                      |
|-----------------------------|--------------------------------------------------------------|
| CONTROL ``$mesh.hello``     | dialer → listener: ``{name, site, role, labels, boot}``      |
| CONTROL ``$mesh.welcome``   | listener → dialer: the same map about the listener           |
| CONTROL ``$mesh.refuse``    | either way: ``{reason}``; the link is closed                 |
| CONTROL ``$mesh.interest``  | ``{full, add, remove}``, keys as ``[pattern, queue, labels]`` |
| PING / PONG                 | liveness and round trip (``msg_id`` echoes)                  |
| PUB                         | a forwarded message; ``queue`` lists the groups to serve,    |
|                             | ``sid`` the tally id when ``flags`` has COUNT                 |
| STATUS ROUTED               | answer to a counted PUB: ``sid`` = tally id, ``seq`` = count |

Decoding is for untrusted input: anything malformed raises ``RemoteProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import RemoteProtocolError
from ..protocol import MESH_HELLO, MESH_INTEREST, MESH_REFUSE, MESH_WELCOME
from ..router._interest import InterestKey, Labels
from ..router._strategy import Role
from ..subjects import validate_pattern

__all__ = [
    "HELLO",
    "INTEREST",
    "REFUSE",
    "WELCOME",
    "Announce",
    "PeerInfo",
    "decode_announce",
    "decode_info",
    "encode_announce",
    "encode_info",
]

HELLO = MESH_HELLO
WELCOME = MESH_WELCOME
REFUSE = MESH_REFUSE
INTEREST = MESH_INTEREST

_MAX_PAYLOAD = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is at the other end of a peer link."""

    name: str
    site: str
    role: Role
    labels: dict[str, str]
    #: This run of the node (random per process; "" from nodes that predate it): a link from
    #: a new incarnation replaces the old one's links at once (docs/mesh.md, peer links).
    boot: str = ""


@dataclass(frozen=True, slots=True)
class Announce:
    full: bool
    add: list[InterestKey]
    remove: list[InterestKey]


def _unpack(payload: bytes | memoryview) -> Any:
    if len(payload) > _MAX_PAYLOAD:
        raise RemoteProtocolError("mesh control payload too large")
    try:
        return msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        raise RemoteProtocolError("mesh control payload is not msgpack") from None


def encode_info(info: PeerInfo) -> bytes:
    raw = {"name": info.name, "site": info.site, "role": info.role.value, "labels": info.labels}
    if info.boot:
        raw["boot"] = info.boot  # additive: older nodes ignore keys they do not know
    return msgpack.packb(raw)  # type: ignore[no-any-return]


def decode_info(payload: bytes | memoryview) -> PeerInfo:
    """Raises ``RemoteProtocolError`` for anything but a well-formed hello/welcome map."""
    raw = _unpack(payload)
    if not isinstance(raw, dict):
        raise RemoteProtocolError("mesh hello must be a map")
    name, site, role, labels = raw.get("name"), raw.get("site"), raw.get("role"), raw.get("labels")
    if type(name) is not str or not name or type(site) is not str:
        raise RemoteProtocolError("mesh hello needs a name and a site")
    try:
        role_enum = Role(role)
    except ValueError:
        raise RemoteProtocolError(f"unknown node role {role!r}") from None
    if not isinstance(labels, dict) or not all(
        type(k) is str and type(v) is str for k, v in labels.items()
    ):
        raise RemoteProtocolError("mesh hello labels must map strings to strings")
    boot = raw.get("boot", "")
    if type(boot) is not str or len(boot) > 64:
        raise RemoteProtocolError("mesh hello boot must be a short string")
    return PeerInfo(name, site, role_enum, labels, boot)


def _key_out(key: InterestKey) -> list[Any]:
    return [key[0], key[1], [list(kv) for kv in key[2]]]


def _key_in(raw: Any) -> InterestKey:
    if not isinstance(raw, list) or len(raw) != 3:
        raise RemoteProtocolError("interest key must be [pattern, queue, labels]")
    pattern, queue, labels = raw
    if type(pattern) is not str or type(queue) is not str or not isinstance(labels, list):
        raise RemoteProtocolError("interest key must be [pattern, queue, labels]")
    try:
        validate_pattern(pattern)
    except Exception:
        raise RemoteProtocolError(f"invalid interest pattern {pattern[:64]!r}") from None
    pairs: list[tuple[str, str]] = []
    for kv in labels:
        if not isinstance(kv, list) or len(kv) != 2 or not all(type(x) is str for x in kv):
            raise RemoteProtocolError("interest labels must be [key, value] pairs")
        pairs.append((kv[0], kv[1]))
    out: Labels = tuple(sorted(pairs))
    return (pattern, queue, out)


def encode_announce(full: bool, add: set[InterestKey], remove: set[InterestKey]) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "full": full,
            "add": [_key_out(k) for k in sorted(add)],
            "remove": [_key_out(k) for k in sorted(remove)],
        }
    )


def decode_announce(payload: bytes | memoryview) -> Announce:
    """Raises ``RemoteProtocolError`` for a malformed announcement."""
    raw = _unpack(payload)
    if not isinstance(raw, dict) or type(raw.get("full")) is not bool:
        raise RemoteProtocolError("interest announcement must be a map with 'full'")
    add, remove = raw.get("add", []), raw.get("remove", [])
    if not isinstance(add, list) or not isinstance(remove, list):
        raise RemoteProtocolError("interest add/remove must be lists")
    return Announce(raw["full"], [_key_in(k) for k in add], [_key_in(k) for k in remove])

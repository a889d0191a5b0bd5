"""The A2A fabric binding: subjects and constants, in one place (no a2a-sdk import here).

The binding carries A2A's JSON-RPC 2.0 objects unchanged as fabric payloads (UTF-8 JSON):

* ``a2a.NAME.card`` (request): the Agent Card as A2A's JSON form.
* ``a2a.NAME.rpc`` (request, or stream for the streaming methods): one JSON-RPC request in;
  one JSON-RPC response out, or, for ``SendStreamingMessage`` and ``SubscribeToTask``, one
  JSON-RPC response per stream chunk, in order, like the SSE events of the HTTP binding.
* ``a2a.group.GROUP.rpc``: the same, on a subject every member of ``GROUP`` serves, so one
  ``gather`` reaches them all (the multicast send).

Replies on the fabric add one member to the JSON-RPC response, ``"fabric": {"agent": NAME}``, so a
multicast can say who answered; the gateway removes it before a reply leaves over HTTP.
"""

from __future__ import annotations

from fabric.subjects import validate_subject

__all__ = [
    "FABRIC_BINDING",
    "STREAMING_METHODS",
    "card_subject",
    "fabric_url",
    "group_subject",
    "name_from_url",
    "rpc_subject",
]

#: ``protocolBinding`` of the fabric interface in an Agent Card's ``supportedInterfaces``.
FABRIC_BINDING = "FABRIC"
#: JSON-RPC methods answered with a stream of responses (SSE over HTTP, a fabric stream here).
STREAMING_METHODS = frozenset({"SendStreamingMessage", "SubscribeToTask"})
_URL_SCHEME = "fabric:"


def card_subject(name: str) -> str:
    """Where agent ``name`` answers with its card. Raises InvalidSubject for a bad name."""
    validate_subject(name)
    return f"a2a.{name}.card"


def rpc_subject(name: str) -> str:
    """Where agent ``name`` takes JSON-RPC requests. Raises InvalidSubject for a bad name."""
    validate_subject(name)
    return f"a2a.{name}.rpc"


def group_subject(group: str) -> str:
    """The subject every member of ``group`` serves. Raises InvalidSubject for a bad name."""
    validate_subject(group)
    return f"a2a.group.{group}.rpc"


def fabric_url(name: str) -> str:
    """The ``url`` of the fabric interface in ``name``'s card (``fabric:NAME``)."""
    return f"{_URL_SCHEME}{name}"


def name_from_url(url: str) -> str:
    """The agent name in a ``fabric:NAME`` interface URL.

    Raises:
        ValueError: not a fabric URL.
    """
    if not url.startswith(_URL_SCHEME) or len(url) == len(_URL_SCHEME):
        raise ValueError(f"not a fabric interface URL: {url!r}")
    return url[len(_URL_SCHEME) :]

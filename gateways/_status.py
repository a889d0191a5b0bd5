"""Typed fabric errors to HTTP status codes and JSON bodies (pure, no I/O).

The mapping is what HTTP users expect from a proxy in front of a service: the client's own
mistakes are 4xx, the upstream's failures 5xx. ``Timeout`` is 408 and not 504 because the
deadline is the one the client chose (issue 7); 504 is kept for "the node cannot be reached".
"""

from __future__ import annotations

from typing import Any

from fabric.errors import (
    Cancelled,
    ConnectionLost,
    FabricError,
    InvalidSubject,
    NoResponders,
    NotAuthorized,
    PayloadTooLarge,
    PayloadValidationError,
    RemoteError,
    RemoteProtocolError,
    SlowConsumer,
    Timeout,
)

__all__ = ["error_body", "status_for", "ws_close_code"]

# Most specific first: ConnectionLost and Timeout are RequestErrors too.
_STATUS: tuple[tuple[type[FabricError], int], ...] = (
    (InvalidSubject, 400),
    (RemoteProtocolError, 400),
    (NotAuthorized, 403),
    (Timeout, 408),
    (PayloadTooLarge, 413),
    (PayloadValidationError, 422),
    (RemoteError, 502),
    (Cancelled, 502),
    (NoResponders, 503),
    (SlowConsumer, 503),
    (ConnectionLost, 504),
)


def status_for(exc: FabricError) -> int:
    """The HTTP status for a fabric error (500 for one with no better match)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def ws_close_code(status: int) -> int:
    """WebSocket close code for an HTTP status: 4000 + status (application range 4000-4999)."""
    return 4000 + status


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one JSON error shape every endpoint answers with."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return {"error": body}

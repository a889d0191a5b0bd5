"""Every error the fabric raises, in one module.

Families are shallow on purpose (h11, anyio and httpcore do the same): an agent catches
``FabricError`` for everything, a family (``RequestError``, ``StateError``…) for one concern, or
one leaf for one case. Errors carry the subject (or key) they concern, so a log line says what
failed without a traceback.

Errors that cross the wire travel as ``(code, message)``; ``error_from_wire`` rebuilds the
typed error on the other side, and an unknown code becomes ``RemoteError`` rather than nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BackendUnavailable",
    "BadDescriptor",
    "BadHandlerResult",
    "Cancelled",
    "ConfigError",
    "Conflict",
    "ConnectionLost",
    "FabricError",
    "Fenced",
    "GrantRefused",
    "InvalidSubject",
    "LeaseExpired",
    "LeaseHeld",
    "LocalProtocolError",
    "MigrationFailed",
    "NoResponders",
    "NotAuthorized",
    "NotFound",
    "PayloadTooLarge",
    "PayloadValidationError",
    "PoolExhausted",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "RequestError",
    "SlowConsumer",
    "SocketInUse",
    "StateError",
    "Timeout",
    "error_from_wire",
    "size_text",
]


def size_text(n: int) -> str:
    """``512 B``, ``64 KiB``, ``80.5 MiB``: a byte count as a reader says it."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            text = f"{value:.1f}".removesuffix(".0") if unit != "B" else str(n)
            return f"{text} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable: GiB ends the loop


class FabricError(Exception):
    """Base of every error the fabric raises."""

    #: Stable identifier used on the wire and in metrics; one per leaf class.
    code: ClassVar[str] = "fabric_error"

    def __init__(self, message: str = "", *, subject: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.subject = subject

    def __str__(self) -> str:
        if self.subject:
            return f"{self.message} (subject {self.subject!r})"
        return self.message


# --- protocol -----------------------------------------------------------------------------


class ProtocolError(FabricError):
    """A frame or header broke the wire protocol."""

    code = "protocol_error"


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""

    code = "local_protocol_error"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (untrusted input, always this)."""

    code = "remote_protocol_error"


class BadDescriptor(RemoteProtocolError):
    """A shared-memory descriptor points outside its slot, segment or generation."""

    code = "bad_descriptor"


class PayloadTooLarge(FabricError):
    """The payload is larger than the configured maximum."""

    code = "payload_too_large"
    #: The next step printed with the sizes (the node's limit is the usual one).
    HINT: ClassVar[str] = (
        "send it in chunks or as a shared blob (agent.state.share), or raise the node's "
        "limit: FABRIC_MAX_PAYLOAD / fabric node --max-payload BYTES"
    )

    def __init__(
        self,
        message: str = "",
        *,
        subject: str | None = None,
        size: int | None = None,
        limit: int | None = None,
        hint: str | None = None,
    ) -> None:
        if not message and size is not None and limit is not None:
            message = (
                f"payload of {size_text(size)} ({size} bytes) exceeds the limit of "
                f"{size_text(limit)}; {hint or self.HINT}"
            )
        super().__init__(message, subject=subject)
        self.size = size
        self.limit = limit


class InvalidSubject(FabricError):
    """A subject is empty, has an empty token, or misplaces a wildcard."""

    code = "invalid_subject"


class PayloadValidationError(FabricError):
    """A payload did not validate against the model it was parsed into."""

    code = "payload_validation"

    def __init__(
        self, message: str = "", *, subject: str | None = None, errors: list[Any] | None = None
    ) -> None:
        super().__init__(message, subject=subject)
        self.errors = errors or []


class ConfigError(FabricError):
    """A setting is missing or inconsistent."""

    code = "config_error"


class SocketInUse(ConfigError):
    """Another live node already serves on this Unix socket."""

    code = "socket_in_use"

    def __init__(
        self,
        message: str = "",
        *,
        subject: str | None = None,
        path: str | None = None,
        pid: int | None = None,
    ) -> None:
        if not message and path is not None:
            who = f"node pid {pid}" if pid else "another process"
            message = (
                f"{path} is in use by {who}: stop it first, or give this node its own "
                "--socket (FABRIC_SOCKET)"
            )
        super().__init__(message, subject=subject)
        self.path = path
        self.pid = pid


# --- requests -----------------------------------------------------------------------------


class RequestError(FabricError):
    """A request, gather, map or stream did not complete."""

    code = "request_error"


class Timeout(RequestError, TimeoutError):
    """The deadline passed before a reply arrived."""

    code = "timeout"


class NoResponders(RequestError):
    """Nobody listens on the subject: answered at once, not after a timeout."""

    code = "no_responders"


class Cancelled(RequestError):
    """The request or stream was cancelled by the other side."""

    code = "cancelled"


class RemoteError(RequestError):
    """The responder's handler raised; the message is the responder's, the type its code."""

    code = "remote_error"

    def __init__(
        self, message: str = "", *, subject: str | None = None, remote_code: str | None = None
    ) -> None:
        super().__init__(message, subject=subject)
        self.remote_code = remote_code


class BadHandlerResult(RemoteError):
    """A handler returned something the fabric cannot send: return bytes, str or a pydantic
    model."""

    code = "bad_handler_result"


class ConnectionLost(RequestError):
    """The link to the node dropped while the operation was in flight."""

    code = "connection_lost"


class NotAuthorized(FabricError):
    """The credential is unknown, or the agent may not use this subject this way."""

    code = "not_authorized"


class GrantRefused(NotAuthorized):
    """A responder refused a direct grant: forged, for someone else, or expired."""

    code = "grant_refused"


class SlowConsumer(FabricError):
    """A receiver fell so far behind that messages for it were dropped (memory stays bounded)."""

    code = "slow_consumer"

    def __init__(self, message: str = "", *, subject: str | None = None, lost: int = 0) -> None:
        super().__init__(message, subject=subject)
        #: How many messages were dropped since the last report.
        self.lost = lost


class PoolExhausted(FabricError):
    """The shared-memory pool had no free slot before the deadline."""

    code = "pool_exhausted"


# --- state tier ---------------------------------------------------------------------------


class StateError(FabricError):
    """A state operation failed."""

    code = "state_error"

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        super().__init__(message, subject=key)
        self.key = key


class Conflict(StateError):
    """Compare-and-set failed: the stored version is not the one expected."""

    code = "conflict"


class Fenced(StateError):
    """The write carried a fencing token older than the lease's current one."""

    code = "fenced"


class LeaseHeld(StateError):
    """Another owner holds the lease on this key."""

    code = "lease_held"


class LeaseExpired(StateError):
    """The lease ran out before the operation."""

    code = "lease_expired"


class NotFound(StateError):
    """No value or blob under this key or reference."""

    code = "not_found"


class BackendUnavailable(StateError):
    """The state backend cannot be reached; nothing was written."""

    code = "backend_unavailable"


class MigrationFailed(FabricError):
    """The agent could not be moved; it keeps running where it was."""

    code = "migration_failed"


def _leaf_classes() -> dict[str, type[FabricError]]:
    found: dict[str, type[FabricError]] = {}
    pending: list[type[FabricError]] = [FabricError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return found


_BY_CODE = _leaf_classes()


def error_from_wire(code: str, message: str, *, subject: str | None = None) -> FabricError:
    """Rebuild the typed error a peer sent as ``(code, message)``.

    An unknown code becomes ``RemoteError`` carrying it, so new codes never turn into silence.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(message, subject=subject, remote_code=code)
    if issubclass(cls, StateError):
        return cls(message, key=subject)
    if issubclass(cls, RemoteError):
        return cls(message, subject=subject, remote_code=code)
    return cls(message, subject=subject)

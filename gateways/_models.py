"""The JSON shapes of the gateway's API (validated at the edge with pydantic).

A payload is given exactly one way: ``text`` (UTF-8), ``base64`` (any bytes) or ``json`` (any
JSON value, sent as its compact UTF-8 encoding). Replies carry ``text`` when the bytes are
valid UTF-8 and ``base64`` otherwise, so binary payloads survive the trip intact.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ErrorDetail",
    "ErrorOut",
    "HealthOut",
    "MessageIn",
    "MessageOut",
    "PublishOut",
    "SdpIn",
    "SdpOut",
    "message_out",
]

_HEADER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class MessageIn(BaseModel):
    """A message to publish or a request to send."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="Payload as UTF-8 text.")
    base64: str | None = Field(None, description="Payload as standard base64.")
    json_: Any = Field(None, alias="json", description="Payload as a JSON value.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="User headers (names: letters, digits, _ . -)."
    )

    @model_validator(mode="after")
    def _one_payload(self) -> MessageIn:
        given = [n for n in ("text", "base64") if getattr(self, n) is not None]
        if "json_" in self.model_fields_set:
            given.append("json")
        if len(given) > 1:
            raise ValueError(f"give the payload one way only, not {' and '.join(given)}")
        if self.base64 is not None:
            try:
                base64.b64decode(self.base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("base64 is not valid standard base64") from None
        for name, value in self.headers.items():
            if not _valid_header(name) or len(value) > 4096:
                raise ValueError(f"header {name[:64]!r}: bad name or value over 4096 chars")
        return self

    def payload(self) -> bytes:
        """The payload bytes (empty when none was given)."""
        if self.text is not None:
            return self.text.encode()
        if self.base64 is not None:
            return base64.b64decode(self.base64, validate=True)
        if "json_" in self.model_fields_set:
            return json.dumps(self.json_, separators=(",", ":")).encode()
        return b""


def _valid_header(name: str) -> bool:
    return _HEADER_NAME.fullmatch(name) is not None


class MessageOut(BaseModel):
    """A message received (a reply, a stream chunk, a subscription delivery)."""

    subject: str = Field(description="The subject it was sent on (for a reply: the request's).")
    text: str | None = Field(None, description="Payload, when it is valid UTF-8.")
    base64: str | None = Field(None, description="Payload, when it is not valid UTF-8.")
    headers: dict[str, str] = Field(default_factory=dict)
    reply: str = Field("", description="Where an answer goes (publish to it), or empty.")


def message_out(
    subject: str, data: bytes | memoryview, headers: dict[str, str], reply: str = ""
) -> dict[str, Any]:
    """Serialise a received message to the ``MessageOut`` shape."""
    raw = bytes(data)
    out: dict[str, Any] = {"subject": subject, "headers": dict(headers), "reply": reply}
    try:
        out["text"] = raw.decode()
    except UnicodeDecodeError:
        out["base64"] = base64.b64encode(raw).decode()
    return out


class PublishOut(BaseModel):
    """Acknowledgement of a publish: the node accepted it (delivery is fire-and-forget)."""

    subject: str
    size: int


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    node: str = Field(description="Name of the node the gateway reaches ('' when none).")
    connected: bool
    agents: int = Field(description="Agent connections the gateway holds for its clients.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable error code (the fabric error's code where one exists).")
    message: str
    subject: str | None = None
    limit: int | None = None
    details: list[Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class SdpIn(BaseModel):
    """A WebRTC session description (the offer)."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, max_length=64 * 1024)
    type: Literal["offer"]


class SdpOut(BaseModel):
    sdp: str
    type: Literal["answer"]

"""Payload encoding: bytes-like travels as is; pydantic models and str are encoded once."""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from fabric.errors import BadHandlerResult, PayloadValidationError

__all__ = ["Payload", "checked_reply", "decode_model", "encode_payload"]

#: What an agent may send: raw bytes (any byte buffer, zero-copy), text, or a pydantic model.
Payload = bytes | bytearray | memoryview | str | BaseModel

M = TypeVar("M", bound=BaseModel)


def encode_payload(data: Any) -> bytes | memoryview:
    """Turn a payload into bytes for the wire without copying buffers.

    Raises:
        TypeError: for a type the fabric does not know how to send.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, memoryview):
        return data if data.format == "B" and data.contiguous else memoryview(data).cast("B")
    if isinstance(data, bytearray):
        return memoryview(data)
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, BaseModel):
        return msgpack.packb(data.model_dump(mode="json"))  # type: ignore[no-any-return]
    if data is None:
        return b""
    try:
        view = memoryview(data)  # numpy arrays and any other buffer exporter
    except TypeError:
        raise TypeError(
            f"cannot send {type(data).__name__}: use bytes, a buffer, str or a pydantic model"
        ) from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def checked_reply(result: Any, handler: Any, subject: str) -> Any:
    """``result`` unchanged when the fabric can send it as a reply.

    A dict or list is refused rather than encoded: it has two plausible encodings (JSON for
    HTTP clients, msgpack for ``Msg.parse``) and the requester could not tell which one it
    got, so the error is raised here, at the handler, where the fix is.

    Raises:
        BadHandlerResult: naming the handler, the subject and the type, with what to return.
    """
    if result is None or isinstance(result, bytes | bytearray | memoryview | str | BaseModel):
        return result
    try:
        memoryview(result)
    except TypeError:
        pass
    else:
        return result  # numpy arrays and other buffers travel as they are
    name = getattr(handler, "__qualname__", None) or repr(handler)
    what = type(result).__name__
    advice = ""
    if isinstance(result, dict | list):
        advice = f" (for a {what}: json.dumps(...) it, or return a pydantic model)"
    raise BadHandlerResult(
        f"handler {name} returned a {what}: return bytes, str or a pydantic model{advice}",
        subject=subject,
    )


def decode_model(data: bytes | memoryview, model: type[M], subject: str | None = None) -> M:
    """Validate a msgpack payload into ``model``.

    Raises:
        PayloadValidationError: naming each field that failed, or saying the bytes are not
            msgpack.
    """
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise PayloadValidationError(
            f"payload is not a msgpack-encoded {model.__name__}: {exc.__class__.__name__}",
            subject=subject,
        ) from None
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        fields = "; ".join(
            f"field {'.'.join(str(p) for p in e['loc']) or '(root)'!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise PayloadValidationError(
            f"payload does not validate as {model.__name__}: {fields}",
            subject=subject,
            errors=list(exc.errors()),
        ) from None

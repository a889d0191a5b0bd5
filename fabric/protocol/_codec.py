"""Typed messages of the control plane, and how their fields travel as string headers.

A control call's small arguments and answers ride in the frame's user headers, which are
``str → str`` on the wire (fabric/protocol/_wire.py). A message is a frozen dataclass whose
fields are ``str``, ``int`` or ``bool`` (optionally ``| None``); this module turns one into
those headers and back:

1. ``str`` travels as is; ``int`` in decimal; ``bool`` as ``"1"`` / ``"0"``.
2. A field with a default is left out while it holds its default, and absent (or ``""``)
   reads back as that default. A field without one must be present and non-empty.
3. Field order is header order, so the bytes on the wire do not depend on who encoded them.
4. Decoding untrusted headers either returns the message or raises ``RemoteProtocolError``
   naming the call and the header: nothing else escapes.

A message that travels as a msgpack map in the payload frame instead (``PayloadMessage``)
brings its own ``to_payload`` / ``from_payload``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from ..errors import RemoteProtocolError

__all__ = [
    "FieldSpec",
    "HeaderMessage",
    "PayloadMessage",
    "decode_fields",
    "encode_fields",
    "fields_of",
]

M = TypeVar("M")


class HeaderMessage:
    """Base of messages carried in user headers (subclasses are frozen dataclasses)."""

    __slots__ = ()


class PayloadMessage:
    """Base of messages carried as a msgpack map in the payload frame."""

    __slots__ = ()
    #: What the map holds, for docs/protocol.md.
    WIRE: ClassVar[str] = ""

    def to_payload(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_payload(cls, payload: Any, subject: str) -> Self:
        """Raises ``RemoteProtocolError`` for anything malformed."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One header field of a message."""

    name: str
    #: ``str``, ``int`` or ``bool``.
    kind: type
    required: bool
    default: Any

    def describe(self) -> str:
        """``name: int``, ``name?: str``: how docs/protocol.md writes it."""
        return f"{self.name}{'' if self.required else '?'}: {self.kind.__name__}"


_KINDS = (str, int, bool)


_FIELDS: dict[type, tuple[FieldSpec, ...]] = {}


def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The header fields of message class ``cls``, in wire order."""
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else hint
        if hint not in _KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: a header field is str, int or bool")
        required = f.default is dataclasses.MISSING
        specs.append(FieldSpec(f.name, hint, required, None if required else f.default))
    known = _FIELDS[cls] = tuple(specs)
    return known


def encode_fields(message: object, nil_when_empty: bool) -> dict[str, str] | None:
    """The user headers carrying ``message`` (rules 1-3); None for no field at all when the
    call sends a nil map (``nil_when_empty``)."""
    out: dict[str, str] = {}
    for spec in fields_of(type(message)):
        value = getattr(message, spec.name)
        if not spec.required and value == spec.default:
            continue
        if spec.kind is bool:
            out[spec.name] = "1" if value else "0"
        else:
            out[spec.name] = value if spec.kind is str else str(value)
    if not out and nil_when_empty and not fields_of(type(message)):
        return None
    return out


def decode_fields(cls: type[M], headers: dict[str, str] | None, subject: str) -> M:
    """Rebuild a ``cls`` from untrusted headers (rule 4).

    Raises:
        RemoteProtocolError: a required header missing or empty, or not of its type.
    """
    got = headers or {}
    values: dict[str, Any] = {}
    for spec in fields_of(cls):
        raw = got.get(spec.name)
        if raw is None or raw == "":
            if spec.required:
                raise RemoteProtocolError(f"{subject} needs header {spec.name!r}")
            values[spec.name] = spec.default
        elif spec.kind is str:
            values[spec.name] = raw
        elif spec.kind is bool:
            if raw not in ("0", "1"):
                raise RemoteProtocolError(f"header {spec.name!r} of {subject} must be 0 or 1")
            values[spec.name] = raw == "1"
        else:
            try:
                values[spec.name] = int(raw)
            except ValueError:
                raise RemoteProtocolError(
                    f"header {spec.name!r} of {subject} must be an integer, not {raw[:40]!r}"
                ) from None
    return cls(**values)

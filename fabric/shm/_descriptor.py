"""The descriptor: the few bytes that travel instead of a shared-memory payload.

Fixed size, little-endian, versioned by a magic prefix. ``Descriptor.decode`` turns any bytes
into a well-formed descriptor or ``BadDescriptor``, never anything else (a hypothesis test holds
it to that); whether the descriptor names a real slot is a second check against the layout
(``validate_for_segment`` on a receiver, ``SlotPool`` on the node), because a well-formed
descriptor from a peer is still untrusted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import BadDescriptor, LocalProtocolError
from ._layout import PoolLayout, Slot

__all__ = ["DESCRIPTOR_SIZE", "Descriptor", "validate_for_segment"]

# magic, version, flags (0), segment u32, slot u32, offset u64, length u64, generation u64
_STRUCT = struct.Struct("<2sBBIIQQQ")
_MAGIC = b"FS"
_VERSION = 1
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

#: Bytes of an encoded descriptor.
DESCRIPTOR_SIZE = _STRUCT.size


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A leased slot and the payload in it. Field order is the wire order."""

    #: Which memfd segment of the node's pool.
    segment: int
    #: Global slot index (see ``PoolLayout``).
    slot: int
    #: Byte offset of the payload in the segment; always the slot's own offset.
    offset: int
    #: Payload bytes, at most the slot size.
    length: int
    #: The slot's allocation count; a descriptor of an earlier lease of the slot is stale.
    generation: int

    def encode(self) -> bytes:
        """Pack for the wire (``DESCRIPTOR_SIZE`` bytes).

        Raises:
            LocalProtocolError: a field is negative or too large for its wire width.
        """
        try:
            return _STRUCT.pack(
                _MAGIC,
                _VERSION,
                0,
                self.segment,
                self.slot,
                self.offset,
                self.length,
                self.generation,
            )
        except struct.error as exc:
            raise LocalProtocolError(f"descriptor does not fit the wire format: {exc}") from None

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Descriptor:
        """Parse an untrusted descriptor.

        Raises:
            BadDescriptor: for anything but exactly one well-formed descriptor: wrong size,
                magic, version or flags, generation 0 (never handed out), or an offset and
                length whose sum overflows 64 bits.
        """
        if len(data) != DESCRIPTOR_SIZE:
            raise BadDescriptor(f"descriptor must be {DESCRIPTOR_SIZE} bytes, got {len(data)}")
        try:
            magic, version, flags, segment, slot, offset, length, generation = _STRUCT.unpack(data)
        except (struct.error, TypeError, ValueError) as exc:
            # Only a non-byte-shaped buffer (e.g. a multi-dimensional view) gets here.
            raise BadDescriptor(f"undecodable descriptor: {exc}") from None
        if magic != _MAGIC or version != _VERSION or flags != 0:
            raise BadDescriptor("not a shared-memory descriptor of a known version")
        if generation == 0:
            raise BadDescriptor("generation 0 is never handed out")
        if offset + length > _U64:
            raise BadDescriptor("offset + length overflows 64 bits")
        return cls(segment, slot, offset, length, generation)


def _is_u(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


def check_fields(desc: Descriptor) -> None:
    """Raise ``BadDescriptor`` unless every field is an int in its wire range.

    Descriptors built from msgpack or by hand bypass ``decode``; the pool and the region call
    this first so ``bool``, floats or 2**70 never reach arithmetic.
    """
    if not (
        _is_u(desc.segment, _U32)
        and _is_u(desc.slot, _U32)
        and _is_u(desc.offset, _U64)
        and _is_u(desc.length, _U64)
        and _is_u(desc.generation, _U64)
        and desc.generation > 0
    ):
        raise BadDescriptor("descriptor fields out of range")


def validate_for_segment(desc: Descriptor, segment_size: int, layout: PoolLayout) -> Slot:
    """Check, on the receiving side, that ``desc`` stays inside its slot and mapping.

    ``segment_size`` is the size of the receiver's own mapping of ``desc.segment``: the layout
    comes from the node and the mapping is what a read would touch, so both bound the read.

    Returns the slot. Raises:
        BadDescriptor: unknown segment or slot, an offset that is not the slot's, a length
            larger than the slot, or a range past the end of the mapping.
    """
    check_fields(desc)
    if desc.segment >= len(layout.segment_sizes):
        raise BadDescriptor(f"segment {desc.segment} does not exist")
    if desc.slot >= len(layout.slots):
        raise BadDescriptor(f"slot {desc.slot} out of range")
    slot = layout.slots[desc.slot]
    if slot.segment != desc.segment:
        raise BadDescriptor(f"slot {desc.slot} is not in segment {desc.segment}")
    if desc.offset != slot.offset:
        raise BadDescriptor(f"offset {desc.offset} is not the offset of slot {desc.slot}")
    # Compared one at a time, never as a sum, so the rule reads the same in any language.
    if desc.length > slot.size:
        raise BadDescriptor(f"length {desc.length} exceeds slot size {slot.size}")
    if desc.offset > segment_size or desc.length > segment_size - desc.offset:
        raise BadDescriptor("descriptor reaches past the end of the mapping")
    return slot

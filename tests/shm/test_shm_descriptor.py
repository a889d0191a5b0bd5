"""Descriptor wire format, the receiver-side bounds check and RELEASE batches."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest

from fabric.errors import BadDescriptor, LocalProtocolError
from fabric.shm import (
    DESCRIPTOR_SIZE,
    Descriptor,
    PoolLayout,
    PoolSettings,
    ReleaseBatcher,
    SlotClassSpec,
    decode_release_batch,
    encode_release_batch,
    validate_for_segment,
)

LAYOUT = PoolLayout.from_settings(
    PoolSettings(
        classes=(SlotClassSpec(slot_size=4096, count=2), SlotClassSpec(slot_size=65536, count=1))
    )
)
SEGMENT = LAYOUT.segment_sizes[0]  # 4096 * 2 + 65536


def test_roundtrip_and_size() -> None:
    d = Descriptor(segment=3, slot=7, offset=2**40, length=2**20, generation=2**63)
    data = d.encode()
    assert len(data) == DESCRIPTOR_SIZE == 36
    assert Descriptor.decode(data) == d
    assert Descriptor.decode(memoryview(bytearray(data))) == d


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"FS",
        b"\x00" * DESCRIPTOR_SIZE,
        Descriptor(0, 0, 0, 1, 1).encode() + b"\x00",
        Descriptor(0, 0, 0, 1, 1).encode()[:-1],
        b"XX" + Descriptor(0, 0, 0, 1, 1).encode()[2:],  # magic
        b"FS\x02" + Descriptor(0, 0, 0, 1, 1).encode()[3:],  # version
        b"FS\x01\x01" + Descriptor(0, 0, 0, 1, 1).encode()[4:],  # flags
        struct.pack("<2sBBIIQQQ", b"FS", 1, 0, 0, 0, 0, 1, 0),  # generation 0
        struct.pack("<2sBBIIQQQ", b"FS", 1, 0, 0, 0, 2**63, 2**63, 1),  # offset+length overflow
    ],
)
def test_decode_refuses_malformed(data: bytes) -> None:
    with pytest.raises(BadDescriptor):
        Descriptor.decode(data)


def test_encode_refuses_fields_out_of_wire_range() -> None:
    with pytest.raises(LocalProtocolError):
        Descriptor(2**32, 0, 0, 0, 1).encode()
    with pytest.raises(LocalProtocolError):
        Descriptor(0, 0, -1, 0, 1).encode()


def test_validate_for_segment_accepts_real_slots() -> None:
    for slot in LAYOUT.slots:
        d = Descriptor(slot.segment, slot.index, slot.offset, slot.size, 1)
        assert validate_for_segment(d, SEGMENT, LAYOUT) == slot


GOOD = Descriptor(0, 1, 4096, 100, 5)
BAD_FOR_RECEIVER: dict[str, Any] = {
    "unknown segment": {"segment": 1},
    "slot out of range": {"slot": 3},
    "offset not the slot's": {"offset": 0},
    "offset 2**63": {"offset": 2**63},
    "length 2**63": {"length": 2**63},
    "length beyond slot": {"length": 4097},
    "negative offset": {"offset": -4096},
    "float length": {"length": 100.0},
}


@pytest.mark.parametrize("change", BAD_FOR_RECEIVER.values(), ids=BAD_FOR_RECEIVER.keys())
def test_validate_for_segment_refuses(change: dict[str, Any]) -> None:
    validate_for_segment(GOOD, SEGMENT, LAYOUT)
    with pytest.raises(BadDescriptor):
        validate_for_segment(dataclasses.replace(GOOD, **change), SEGMENT, LAYOUT)


def test_validate_for_segment_bounds_by_the_mapping_too() -> None:
    last = LAYOUT.slots[-1]
    d = Descriptor(0, last.index, last.offset, last.size, 1)
    validate_for_segment(d, SEGMENT, LAYOUT)
    # A receiver whose mapping is shorter than the layout claims never reads past it.
    with pytest.raises(BadDescriptor):
        validate_for_segment(d, SEGMENT - 1, LAYOUT)


def test_release_batch_roundtrip_and_refusals() -> None:
    ds = [Descriptor(0, i, 4096 * i, 10, i + 1) for i in range(5)]
    data = encode_release_batch(ds)
    assert decode_release_batch(data) == ds
    for bad in (
        b"",
        data[:-1],
        data + b"\x00",
        b"\x00" * DESCRIPTOR_SIZE,
        encode_release_batch([ds[0]] * 1025),
    ):
        with pytest.raises(BadDescriptor):
            decode_release_batch(bad)


def test_release_batcher_flushes_by_count_and_by_age() -> None:
    b = ReleaseBatcher(max_count=3, max_delay=0.010)
    assert b.deadline() is None and not b.due(now=100.0)
    d = Descriptor(0, 0, 0, 1, 1)
    assert b.add(d, now=100.0) is False
    assert b.deadline() == pytest.approx(100.010)
    assert not b.due(now=100.009)
    assert b.due(now=100.010)
    assert b.add(d, now=100.001) is False
    assert b.add(d, now=100.002) is True
    assert b.drain() == [d, d, d]
    assert len(b) == 0 and b.deadline() is None
    b.add(d, now=200.0)
    assert b.deadline() == pytest.approx(200.010)  # age counts from the oldest pending

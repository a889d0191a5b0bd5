"""SharedRegion and the memfd helpers in one process, on real sealed memfd segments."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import gc
import os
import socket
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
from pydantic import BaseModel

from fabric.errors import BadDescriptor, ConfigError, LocalProtocolError, RemoteProtocolError
from fabric.shm import (
    REQUIRED_SEALS,
    PoolLayout,
    PoolSettings,
    SharedRegion,
    SlotClassSpec,
    SlotPool,
    create_segment,
    recv_fds,
    send_fds,
    verify_segment,
)

SETTINGS = PoolSettings(
    classes=(SlotClassSpec(slot_size=64 * 1024, count=4), SlotClassSpec(slot_size=1 << 20, count=2))
)


@pytest.fixture
def pool() -> SlotPool:
    return SlotPool.from_settings(SETTINGS)


@pytest.fixture
def region(pool: SlotPool) -> Iterator[SharedRegion]:
    fds = [create_segment(f"fabric-test-{i}", n) for i, n in enumerate(pool.layout.segment_sizes)]
    r = SharedRegion.attach(pool.layout, fds)
    yield r
    r.close()


def test_created_segment_is_sealed_and_fixed_in_size() -> None:
    fd = create_segment("fabric-test-seal", 1 << 20)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & REQUIRED_SEALS == REQUIRED_SEALS
        assert verify_segment(fd, 1 << 20) == 1 << 20
        for size in (0, 4096, 2 << 20):
            with pytest.raises(PermissionError):
                os.ftruncate(fd, size)
        with pytest.raises(PermissionError):  # F_SEAL_SEAL: no one can add a write seal
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0x0008)
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:fabric-test-seal")
    finally:
        os.close(fd)


def test_segment_of_no_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        create_segment("fabric-test-empty", 0)


def test_unsealed_or_foreign_fds_are_refused(tmp_path: object) -> None:
    unsealed = os.memfd_create("fabric-test-unsealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(unsealed, 4096)
    no_sealing = os.memfd_create("fabric-test-nosealing", os.MFD_CLOEXEC)
    os.ftruncate(no_sealing, 4096)
    half = os.memfd_create("fabric-test-half", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(half, 4096)
    fcntl.fcntl(half, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)  # no SHRINK
    a, b = socket.socketpair()
    try:
        for fd in (unsealed, no_sealing, half, a.fileno()):
            with pytest.raises(RemoteProtocolError):
                verify_segment(fd)
        sealed = create_segment("fabric-test-size", 8192)
        with pytest.raises(RemoteProtocolError):
            verify_segment(sealed, 4096)
        os.close(sealed)
    finally:
        for fd in (unsealed, no_sealing, half):
            os.close(fd)
        a.close()
        b.close()


def test_attach_refuses_wrong_fd_count_and_closes_them(pool: SlotPool) -> None:
    fds = [create_segment("fabric-test-a", 4096), create_segment("fabric-test-b", 4096)]
    with pytest.raises(RemoteProtocolError):
        SharedRegion.attach(pool.layout, fds)
    for fd in fds:
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF


def test_write_once_view_many(pool: SlotPool, region: SharedRegion) -> None:
    payload = os.urandom(300_000)
    d = pool.allocate("producer", len(payload))
    region.write(d, payload)
    pool.publish("producer", d, ["r1", "r2"])
    v1, v2 = region.view(d), region.view(d)
    assert v1.readonly and v1 == payload and v2 == payload
    with pytest.raises(TypeError):
        v1[0] = 0
    v1.release()
    v2.release()


def test_views_feed_numpy_msgpack_and_pydantic_without_copy(
    pool: SlotPool, region: SharedRegion
) -> None:
    arr = np.arange(100_000, dtype=np.float64)
    d = pool.allocate("p", arr.nbytes)
    region.write(d, arr)  # any buffer, not only bytes
    view = region.view(d)
    got = np.frombuffer(view, dtype=np.float64)
    assert np.array_equal(got, arr)
    assert not got.flags.writeable
    # Zero copy: the array's data pointer lies inside the slot of the shared mapping.
    base = np.frombuffer(region.writable(dataclasses.replace(d, length=0)), dtype=np.uint8)
    assert got.__array_interface__["data"][0] == base.__array_interface__["data"][0]
    del got, base
    view.release()

    class Job(BaseModel):
        name: str
        weights: list[float]

    job = Job(name="embed", weights=[0.5] * 10_000)
    data = msgpack.packb(job.model_dump())
    d = pool.allocate("p", len(data))
    region.write(d, data)
    with region.view(d) as v:
        assert Job.model_validate(msgpack.unpackb(v)) == job
    # pydantic's JSON parser takes only str/bytes/bytearray: JSON payloads pay one copy
    # (bytes(view)); msgpack and numpy read the shared pages directly.
    data = job.model_dump_json().encode()
    d = pool.allocate("p", len(data))
    region.write(d, data)
    with region.view(d) as v:
        assert Job.model_validate_json(bytes(v)) == job


def test_writable_lets_a_producer_serialise_in_place(pool: SlotPool, region: SharedRegion) -> None:
    d = pool.allocate("p", 8 * 1000)
    target = np.frombuffer(region.writable(d), dtype=np.int64)
    target[:] = np.arange(1000)
    del target
    with region.view(d) as v:
        assert np.frombuffer(v, dtype=np.int64)[999] == 999


def test_strided_buffer_is_written_correctly(pool: SlotPool, region: SharedRegion) -> None:
    column = np.arange(2000, dtype=np.int32).reshape(1000, 2)[:, 1]
    d = pool.allocate("p", column.nbytes)
    region.write(d, column)
    with region.view(d) as v:
        assert np.array_equal(np.frombuffer(v, dtype=np.int32), column)


def test_region_refuses_bad_descriptors(pool: SlotPool, region: SharedRegion) -> None:
    d = pool.allocate("p", 100)
    for change in (
        {"segment": 1},
        {"slot": 99},
        {"offset": d.offset + 4096},
        {"length": 2**63},
        {"offset": 2**63},
        {"length": 64 * 1024 + 1},
    ):
        with pytest.raises(BadDescriptor):
            region.view(dataclasses.replace(d, **change))
        with pytest.raises(BadDescriptor):
            region.write(dataclasses.replace(d, **change), b"x")
    with pytest.raises(ValueError):
        region.write(d, b"short")
    with pytest.raises(TypeError):
        region.write(d, "not a buffer")


def test_close_with_views_outstanding_is_safe(pool: SlotPool) -> None:
    fd = create_segment("fabric-test-close", pool.layout.segment_sizes[0])
    region = SharedRegion.attach(pool.layout, [fd])
    d = pool.allocate("p", 5)
    region.write(d, b"hello")
    view = region.view(d)
    arr = np.frombuffer(view, dtype=np.uint8)
    assert region.close() is False  # deferred: the view still pins the mapping
    assert region.closed
    assert bytes(view) == b"hello" and arr[0] == ord("h")  # still readable, never unmapped
    with pytest.raises(LocalProtocolError):
        region.view(d)
    assert region.close() is True
    maps = _memfd_mappings("fabric-test-close")
    assert maps  # still mapped while the view lives
    del arr
    view.release()
    gc.collect()
    assert not _memfd_mappings("fabric-test-close")  # unmapped once the last view went


def test_close_without_views_unmaps_at_once(pool: SlotPool) -> None:
    fd = create_segment("fabric-test-close2", pool.layout.segment_sizes[0])
    region = SharedRegion.attach(pool.layout, [fd])
    d = pool.allocate("p", 5)
    with region.view(d):
        pass
    assert region.close() is True
    assert not _memfd_mappings("fabric-test-close2")


def test_fds_travel_over_a_socketpair() -> None:
    a, b = socket.socketpair()
    fd = create_segment("fabric-test-pass", 4096)
    try:
        send_fds(a, b"L", [fd])
        data, fds = recv_fds(b, 16, maxfds=1)
        assert data == b"L" and len(fds) == 1
        assert os.fstat(fds[0]).st_ino == os.fstat(fd).st_ino
        verify_segment(fds[0], 4096)
        os.close(fds[0])
        # More fds than the receiver accepts: refused, and none leak into the receiver.
        send_fds(a, b"L", [fd, fd, fd])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(RemoteProtocolError):
            recv_fds(b, 16, maxfds=1)
        assert set(os.listdir("/proc/self/fd")) <= before
        with pytest.raises(ValueError):
            send_fds(a, b"", [fd])
        a.close()
        with pytest.raises(RemoteProtocolError):
            recv_fds(b, 16, maxfds=1)
    finally:
        os.close(fd)
        a.close()
        b.close()


def _memfd_mappings(name: str) -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if f"/memfd:{name}" in line]


def test_layout_travels_with_the_fds_as_msgpack() -> None:
    layout = PoolLayout.from_settings(SETTINGS)
    assert PoolLayout.from_wire(msgpack.unpackb(msgpack.packb(layout.to_wire()))) == layout


@pytest.mark.parametrize("fallback", [False, True], ids=["madvise", "touch-each-page"])
def test_populate_commits_the_pool_pages(
    pool: SlotPool, monkeypatch: pytest.MonkeyPatch, fallback: bool
) -> None:
    if fallback:  # an advice the kernel refuses, as a kernel before 5.14 does
        import fabric.shm._region as region_module

        monkeypatch.setattr(region_module, "_MADV_POPULATE_WRITE", -1)
        monkeypatch.setattr(region_module, "_MADV_POPULATE_READ", -1)
    size = pool.layout.segment_sizes[0]
    fd = create_segment("fabric-test-populate", size)
    region = SharedRegion.attach(pool.layout, [fd], close_fds=False)
    try:
        assert os.fstat(fd).st_blocks * 512 < size // 8  # sparse until written
        d = pool.allocate("p", 5)
        region.write(d, b"keep!")
        region.populate(write=True)
        assert os.fstat(fd).st_blocks * 512 >= size
        region.populate(write=False)
        with region.view(d) as v:
            assert bytes(v) == b"keep!"  # populating never changes data
    finally:
        region.close()
        os.close(fd)

"""Blobs in sealed memfds: the seals checked, the store keeping the node's mapping without a
copy, the freed hook, and the embedded backend as the pool's ``BlobHost`` (real memfds, no
sockets: the node and agent processes are in tests/integration/test_blobs.py)."""

from __future__ import annotations

import fcntl
import mmap
import os

import pytest

from fabric.errors import BadDescriptor, NotFound, PayloadTooLarge, StateError
from fabric.shm import BLOB_SEALS, SealedMapping, create_blob, verify_blob
from fabric.state import EmbeddedBackend, StateStore, blob_ref
from fabric.state._store import freeze

DATA = bytes(range(256)) * 1024  # 256 KiB


def _memfd(data: bytes, seals: int) -> int:
    fd = os.memfd_create("fabric-blob-test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _fds_open() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- memfd helpers -----------------------------------------------------------------------


def test_a_created_blob_is_sealed_for_good_and_maps_read_only() -> None:
    fd = create_blob("fabric-blob-test", DATA)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & BLOB_SEALS == BLOB_SEALS
        verify_blob(fd, len(DATA))
        with pytest.raises(PermissionError):
            os.write(fd, b"x")
        with pytest.raises(PermissionError):
            mmap.mmap(fd, len(DATA), flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)
        mapping = SealedMapping(fd, len(DATA))
        view = memoryview(mapping)
        assert view.readonly and view == DATA
        view.release()
        mapping.close()
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "seals",
    [
        BLOB_SEALS & ~fcntl.F_SEAL_WRITE,
        BLOB_SEALS & ~fcntl.F_SEAL_SHRINK,
        BLOB_SEALS & ~fcntl.F_SEAL_GROW,
        BLOB_SEALS & ~fcntl.F_SEAL_SEAL,
    ],
)
def test_every_seal_is_required(seals: int) -> None:
    fd = _memfd(DATA, seals)
    try:
        with pytest.raises(BadDescriptor, match="not sealed"):
            verify_blob(fd, len(DATA))
        with pytest.raises(BadDescriptor):
            SealedMapping(fd, len(DATA))
    finally:
        os.close(fd)


def test_a_wrong_size_or_a_non_memfd_is_refused() -> None:
    fd = create_blob("fabric-blob-test", DATA)
    r, w = os.pipe()
    try:
        for size in (len(DATA) - 1, len(DATA) + 1, 0, -1):
            with pytest.raises(BadDescriptor):
                verify_blob(fd, size)
        with pytest.raises(BadDescriptor, match="sealable"):
            verify_blob(r, 10)
    finally:
        for x in (fd, r, w):
            os.close(x)


def test_an_empty_blob_cannot_be_created() -> None:
    with pytest.raises(ValueError):
        create_blob("fabric-blob-test", b"")


# --- the pure store ----------------------------------------------------------------------


def test_freeze_keeps_a_sealed_mapping_without_a_copy_and_copies_a_plain_mmap() -> None:
    fd = create_blob("fabric-blob-test", DATA)
    mapping = SealedMapping(fd, len(DATA))
    os.close(fd)
    frozen = freeze(memoryview(mapping)[16:32])
    assert frozen.obj is mapping and bytes(frozen) == DATA[16:32]
    # A writable anonymous mapping could change under a reader: copied.
    plain = mmap.mmap(-1, 4096)
    plain[:4] = b"abcd"
    copied = freeze(memoryview(plain))
    plain[:4] = b"XXXX"
    assert copied.obj is not plain and bytes(copied[:4]) == b"abcd"
    # A read-only view of a plain mapping is still the writer's memory: copied.
    assert freeze(memoryview(plain).toreadonly()).obj is not plain
    copied.release()
    frozen.release()


def test_the_freed_hook_sees_each_blobs_bytes_once() -> None:
    freed: list[tuple[str, bytes]] = []
    s = StateStore(on_blob_freed=lambda ref, data: freed.append((ref, bytes(data))))
    ref = s.share(b"one", "a")
    s.share(b"one", "b")
    s.drop_blob(ref, "a")
    assert freed == []
    s.drop_blob(ref, "b")
    assert freed == [(ref, b"one")]
    other = s.share(b"two", "a")
    s.drop_holder("a", now=0)
    assert freed[-1] == (other, b"two") and len(freed) == 2


def test_adopt_blob_moves_the_bytes_and_keeps_the_holds() -> None:
    freed: list[memoryview] = []
    s = StateStore(on_blob_freed=lambda ref, data: freed.append(data))
    original = bytes(DATA)
    ref = s.share(original, "a")
    fd = create_blob("fabric-blob-test", DATA)
    mapping = SealedMapping(fd, len(DATA))
    os.close(fd)
    s.adopt_blob(ref, memoryview(mapping))
    assert s.blob_data(ref).obj is mapping
    assert len(freed) == 1 and freed[0].obj is original
    assert s.holds(ref, "a") == 1
    assert s.stats().blob_bytes == len(DATA)
    with pytest.raises(StateError):
        s.adopt_blob(ref, b"short")
    with pytest.raises(NotFound):
        s.adopt_blob("0" * 64, b"x")
    with pytest.raises(NotFound):
        s.blob_data("0" * 64)


# --- the embedded backend as BlobHost ----------------------------------------------------


def _sealed(data: bytes) -> tuple[SealedMapping, int]:
    fd = create_blob("fabric-blob-test", data)
    return SealedMapping(fd, len(data)), fd


async def test_share_sealed_hashes_itself_and_keeps_one_memfd() -> None:
    b = EmbeddedBackend()
    before = _fds_open()
    ref = await b.share_sealed(*_sealed(DATA), "1")
    assert ref == blob_ref(DATA)
    after_first = _fds_open()
    assert await b.share_sealed(*_sealed(DATA), "2") == ref
    assert _fds_open() == after_first, "the duplicate's fd and mapping were closed"
    stats = await b.stats()
    assert (stats.blobs, stats.blob_bytes, stats.shared_saved_bytes) == (1, len(DATA), len(DATA))
    got = await b.open_sealed(ref, "3", min_size=1)
    assert got is not None
    dup, size = got
    assert size == len(DATA)
    view = memoryview(SealedMapping(dup, size))
    os.close(dup)
    assert view == DATA
    for holder in ("1", "2", "3"):
        await b.drop_blob(ref, holder)
    assert (await b.stats()).blobs == 0
    view.release()  # our own mapping (and, before Python 3.13, its fd)
    assert _fds_open() == before, "the freed blob's fds are closed"


async def test_share_sealed_over_the_limit_closes_what_it_was_given() -> None:
    b = EmbeddedBackend(max_blob_bytes=1024)
    before = _fds_open()
    with pytest.raises(PayloadTooLarge):
        await b.share_sealed(*_sealed(DATA), "1")
    assert _fds_open() == before
    assert (await b.stats()).blobs == 0


async def test_bytes_are_moved_to_a_memfd_when_a_local_agent_opens_them() -> None:
    b = EmbeddedBackend()
    ref = await b.share(bytes(DATA), "remote")
    small = await b.share(b"small", "remote")
    assert await b.open_sealed(small, "local", min_size=64 * 1024) is None
    assert b.store.holds(small, "local") == 0, "an inline answer takes no hold"
    got = await b.open_sealed(ref, "local", min_size=64 * 1024)
    assert got is not None
    os.close(got[0])
    assert isinstance(b.store.blob_data(ref).obj, SealedMapping)
    # The next local share of the same bytes is deduplicated against the memfd.
    assert await b.share_sealed(*_sealed(DATA), "local2") == ref
    assert (await b.stats()).blobs == 2
    with pytest.raises(NotFound):
        await b.open_sealed("0" * 64, "local", min_size=1)


async def test_a_memfd_share_takes_over_a_blob_stored_as_bytes() -> None:
    b = EmbeddedBackend()
    ref = await b.share(bytes(DATA), "remote")
    mapping, fd = _sealed(DATA)
    assert await b.share_sealed(mapping, fd, "local") == ref
    assert b.store.blob_data(ref).obj is mapping
    assert b.store.holds(ref, "remote") == 1 and b.store.holds(ref, "local") == 1

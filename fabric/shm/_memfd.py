"""Sealed memfd segments and passing their file descriptors over AF_UNIX sockets.

Why memfd and seals (Linux ``memfd_create(2)``, ``fcntl(2)`` "File Sealing"):
- a memfd has no name in any file system: nothing appears in ``/dev/shm`` and nothing is left
  behind when a process dies; the memory goes away with the last fd and mapping. No
  ``multiprocessing.resource_tracker`` is involved.
- ``F_SEAL_SHRINK | F_SEAL_GROW`` fix the size for everyone holding the fd, so no peer can
  truncate the segment under a reader (a read past EOF of a shared mapping is SIGBUS, which
  Python cannot catch). ``F_SEAL_SEAL`` forbids further seals (a peer adding ``F_SEAL_WRITE``
  would otherwise make every producer's writes fail).

The fd travels once per agent, as ``SCM_RIGHTS`` ancillary data (``socket.send_fds``), with a
little data (at least one byte: a stream socket drops ancillary data sent with none).

Shared blobs of the state tier are memfds too, but *immutable*: the sharing agent writes the
bytes, closes every writable mapping and adds ``F_SEAL_WRITE`` as well (``create_blob``), so no
process, the creator included, can change them again. Only then may a reader keep a view of
them without a copy (``SealedMapping``).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import socket
import stat
import sys
from collections.abc import Sequence

from typing_extensions import Buffer

from ..errors import BadDescriptor, ConfigError, RemoteProtocolError

__all__ = [
    "BLOB_SEALS",
    "REQUIRED_SEALS",
    "SealedMapping",
    "create_blob",
    "create_segment",
    "map_segment",
    "recv_fds",
    "recv_fds_async",
    "send_fds",
    "send_fds_async",
    "verify_blob",
    "verify_segment",
]

_F_ADD_SEALS: int | None = getattr(fcntl, "F_ADD_SEALS", None)
_F_GET_SEALS: int | None = getattr(fcntl, "F_GET_SEALS", None)
_SEAL_SEAL: int = getattr(fcntl, "F_SEAL_SEAL", 0x0001)
_SEAL_SHRINK: int = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)
_SEAL_GROW: int = getattr(fcntl, "F_SEAL_GROW", 0x0004)
_SEAL_WRITE: int = getattr(fcntl, "F_SEAL_WRITE", 0x0008)

#: Seals a pool segment must carry before anyone maps it.
REQUIRED_SEALS = _SEAL_SHRINK | _SEAL_GROW | _SEAL_SEAL
#: Seals a shared blob must carry: the segment's, plus ``F_SEAL_WRITE`` (contents frozen).
BLOB_SEALS = REQUIRED_SEALS | _SEAL_WRITE

#: ``os.write`` moves at most about 2 GiB per call on Linux; chunks keep each call short.
_WRITE_CHUNK = 64 * 1024 * 1024

#: Upper bound on fds accepted in one message; more is hostile.
_MAX_FDS = 64


def create_segment(name: str, size: int) -> int:
    """Create a memfd of ``size`` bytes, sealed against shrinking, growing and new seals.

    Returns the fd (close-on-exec; pass it explicitly to children or over a socket). The
    memory is sparse: pages cost RAM only once written.

    Raises:
        ConfigError: memfd or sealing is unavailable on this system, or ``size`` is not
            positive.
    """
    if size <= 0:
        raise ConfigError(f"segment size must be positive, got {size}")
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or _F_ADD_SEALS is None:
        raise ConfigError("shared memory needs memfd_create with sealing (Linux 3.17+)")
    try:
        fd: int = memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as exc:
        raise ConfigError(f"memfd_create failed: {exc}") from exc
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, _F_ADD_SEALS, REQUIRED_SEALS)
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot size or seal the shared-memory segment: {exc}") from exc
    return fd


def verify_segment(fd: int, size: int | None = None) -> int:
    """Check that an fd from a peer is a sealed memfd segment before mapping it.

    Returns its size. Raises:
        RemoteProtocolError: the fd is not a regular file, carries fewer seals than
            ``REQUIRED_SEALS`` (a peer could truncate it under us), or its size is not
            ``size``.
        ConfigError: this system cannot read seals.
    """
    return _verify_sealed(fd, REQUIRED_SEALS, size, RemoteProtocolError, "shared-memory segment")


def verify_blob(fd: int, size: int) -> None:
    """Check that an fd from a peer is an immutable blob of exactly ``size`` bytes.

    All of ``BLOB_SEALS`` must be set: without ``F_SEAL_WRITE`` the sender could change the
    bytes after the node hashed them (content addressing would lie), without
    ``F_SEAL_SHRINK`` it could truncate them under a reader (SIGBUS).

    Raises:
        BadDescriptor: not a sealable memfd, a seal missing, or a size other than ``size``
            (or not positive).
        ConfigError: this system cannot read seals.
    """
    if size <= 0:
        raise BadDescriptor(f"a shared blob must have a positive size, got {size}")
    _verify_sealed(fd, BLOB_SEALS, size, BadDescriptor, "shared blob")


def _verify_sealed(
    fd: int, need: int, size: int | None, error: type[RemoteProtocolError], what: str
) -> int:
    if _F_GET_SEALS is None:
        raise ConfigError("this system cannot read memfd seals")
    try:
        st = os.fstat(fd)
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a file that supports sealing at all
            raise error(f"{what} fd is not a sealable memfd") from None
        raise error(f"{what} fd is unusable: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} fd is not a regular file")
    if seals & need != need:
        raise error(f"{what} is not sealed (seals {seals:#x}, need {need:#x})")
    if size is not None and st.st_size != size:
        raise error(f"{what} has {st.st_size} bytes, expected {size}")
    return st.st_size


def create_blob(name: str, data: Buffer) -> int:
    """Write ``data`` into a new memfd and seal it for good (``BLOB_SEALS``); return the fd.

    One copy of the bytes (into the memfd's pages). The fd is close-on-exec and the caller's
    to close; the memory lives while any fd or mapping of it does.

    Raises:
        ValueError: ``data`` is empty (an empty file cannot be mapped).
        ConfigError: memfd or sealing is unavailable on this system, or the host is out of
            memory for the copy.
    """
    view = memoryview(data).cast("B")
    if not view.nbytes:
        raise ValueError("a shared blob cannot be empty")
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or _F_ADD_SEALS is None:
        raise ConfigError("shared blobs need memfd_create with sealing (Linux 3.17+)")
    try:
        fd: int = memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as exc:
        raise ConfigError(f"memfd_create failed: {exc}") from exc
    try:
        # write(2), not a mapping: F_SEAL_WRITE is refused (EBUSY) while any writable shared
        # mapping of the file exists, and a plain write leaves none behind.
        done = 0
        while done < view.nbytes:
            done += os.write(fd, view[done : done + _WRITE_CHUNK])
        fcntl.fcntl(fd, _F_ADD_SEALS, BLOB_SEALS)
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot write or seal the shared blob: {exc}") from exc
    return fd


class SealedMapping(mmap.mmap):
    """A read-only shared mapping of an immutable blob (a memfd carrying ``BLOB_SEALS``).

    The constructor verifies the seals and size before mapping, so an instance always maps
    bytes that nobody can change: views over it may be kept without a copy (the state store's
    ``freeze`` relies on that). The fd may be closed afterwards; the mapping stays until it is
    closed or, when views of it are still alive, until the last one is released.
    """

    def __new__(cls, fd: int, size: int) -> SealedMapping:
        """Raises:
        BadDescriptor: the fd is not an immutable blob of ``size`` bytes.
        ConfigError: the mapping failed (address space) or seals cannot be read.
        """
        verify_blob(fd, size)
        # Python < 3.13 keeps a duplicate of the fd for the mapping's life (an fd per open
        # blob); 3.13 can do without one.
        extra = {"trackfd": False} if sys.version_info >= (3, 13) else {}
        try:
            return super().__new__(
                cls, fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, **extra
            )
        except OSError as exc:
            raise ConfigError(f"cannot map the shared blob: {exc}") from exc


def map_segment(fd: int, size: int, *, writable: bool = True) -> mmap.mmap:
    """Map a (verified) segment shared. The fd may be closed afterwards; the mapping stays.

    Raises:
        ConfigError: the mapping failed (address space, permissions).
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
    except OSError as exc:
        raise ConfigError(f"cannot map the shared-memory segment: {exc}") from exc


def send_fds(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """Send ``data`` (at least one byte) with ``fds`` attached, on a blocking socket.

    Raises:
        ValueError: ``data`` is empty.
        OSError: the socket failed.
    """
    if not data:
        raise ValueError("fds need at least one byte of data to travel with")
    sent = socket.send_fds(sock, [data], list(fds))
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """Receive up to ``bufsize`` bytes and at most ``maxfds`` fds, on a blocking socket.

    Every returned fd is the caller's to close. Raises:
        RemoteProtocolError: the peer sent more fds than ``maxfds`` (the extra ones the
            kernel passed are closed) or closed the connection first.
    """
    data, fds, flags, _ = socket.recv_fds(sock, bufsize, min(maxfds, _MAX_FDS))
    return _check_received(data, fds, flags, maxfds)


async def send_fds_async(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """``send_fds`` for a non-blocking socket on the running event loop (asyncio or uvloop).

    For a socket no transport owns yet: asyncio streams cannot carry ancillary data, so do
    this before wrapping the socket (``loop.connect_accepted_socket`` /
    ``asyncio.open_unix_connection(sock=...)``). Raises like ``send_fds``.
    """
    if not data:
        raise ValueError("fds need at least one byte of data to travel with")
    loop = asyncio.get_running_loop()
    while True:
        try:
            sent = socket.send_fds(sock, [data], list(fds))
            break
        except (BlockingIOError, InterruptedError):
            await _ready(loop, sock, write=True)
    if sent < len(data):
        await loop.sock_sendall(sock, data[sent:])


async def recv_fds_async(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """``recv_fds`` for a non-blocking socket on the running event loop. Raises likewise."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(sock, bufsize, min(maxfds, _MAX_FDS))
            break
        except (BlockingIOError, InterruptedError):
            await _ready(loop, sock, write=False)
    return _check_received(data, fds, flags, maxfds)


def _check_received(
    data: bytes, fds: list[int], flags: int, maxfds: int
) -> tuple[bytes, list[int]]:
    if flags & socket.MSG_CTRUNC or len(fds) > maxfds:
        for fd in fds:
            os.close(fd)
        raise RemoteProtocolError("peer sent more file descriptors than expected")
    if not data and not fds:
        raise RemoteProtocolError("peer closed the connection before sending the segments")
    return data, fds


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, write: bool) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)

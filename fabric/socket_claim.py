"""One node per Unix socket: a node claims its socket path before binding it, and removes
only the socket file it created.

Rules:

1. The claim is an exclusive ``flock`` on ``<socket>.lock``, held for the node's lifetime; the
   kernel drops it when the process dies, even by ``kill -9``, so a crash never leaves a stale
   claim behind. The file holds the owner's PID for the refusal message.
2. A lock file can be unlinked by its owner while another process has it open; a lock taken
   on an unlinked file protects nothing. So after ``flock`` succeeds, the path must still name
   the locked inode, or the claim is retried on the new file.
3. With the claim held, a socket file at the path is stale (its node died) unless something
   still accepts on it: a node without a claim (an older version, or another user of the
   path). A probe connection tells; ``SO_PEERCRED`` on it names the listener's PID.
4. The node remembers the inode it bound and, when it stops, unlinks the path only if it
   still names that inode: a socket someone else created there is never removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
from pathlib import Path

from .errors import SocketInUse

__all__ = ["SocketClaim", "claim_socket"]

_ATTEMPTS = 5


class SocketClaim:
    """This process's exclusive right to serve on ``path`` (see the module's rules)."""

    def __init__(self, path: Path, lock_path: Path, fd: int) -> None:
        self.path = path
        self.lock_path = lock_path
        self._fd: int | None = fd
        self._bound: tuple[int, int] | None = None

    def bound(self) -> None:
        """Record the socket file just bound at ``path`` as ours (rule 4)."""
        st = os.stat(self.path)
        self._bound = (st.st_dev, st.st_ino)

    def owns_socket_file(self) -> bool:
        """Whether ``path`` still names the socket file this node bound."""
        if self._bound is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._bound

    def release(self) -> None:
        """Remove our socket file (only ours) and the lock file, then drop the lock.

        Idempotent; never raises for files that are already gone.
        """
        if self._fd is None:
            return
        if self.owns_socket_file():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._bound = None
        # Unlink before unlocking: a process that opened the old file and then gets the lock
        # sees that the path no longer names it and retries (rule 2).
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    return None


def _listener_pid(path: Path) -> int | None:
    """The PID of whoever accepts on ``path`` (0 when it accepts but the PID is unknown),
    or None when nothing listens there (rule 3)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not stat.S_ISSOCK(mode):
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return None  # ECONNREFUSED: a stale file of a dead node
    try:
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _, _ = struct.unpack("3i", creds)
        return int(pid)
    except (OSError, AttributeError):  # no SO_PEERCRED outside Linux
        return 0
    finally:
        probe.close()


def claim_socket(path: Path) -> SocketClaim:
    """Claim ``path`` for this process (its directory must exist).

    Raises:
        SocketInUse: another live node serves on ``path`` (names its PID when known).
        OSError: the lock file cannot be created (permissions).
    """
    lock_path = path.with_name(path.name + ".lock")
    for _ in range(_ATTEMPTS):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise SocketInUse(path=str(path), pid=pid) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)  # the owner unlinked it as we locked it: try the new file (rule 2)
            continue
        pid = _listener_pid(path)
        if pid is not None:
            os.close(fd)
            raise SocketInUse(path=str(path), pid=pid or None)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return SocketClaim(path, lock_path, fd)
    raise SocketInUse(path=str(path), pid=None)

"""Large values of the durable store, one immutable file each, beside the SQLite file.

Why: a migration on one host hands a value over as a sealed memfd (docs/migration.md); the
new node must make it durable before it answers, and writing 64 MiB into SQLite with an
fsync costs 100-200 ms. A value kept in a file of its own, written once and never changed,
can instead be *hard-linked* into the new node's directory: one directory entry and one
directory fsync, whatever the size, and the bytes on disk are the ones the old node already
made durable.

Rules:

1. A file holds exactly one version of one key, its name ``<key digest>-<version>-<random>``,
   mode 0400, written and fsync'd before the row naming it is committed; it is never written
   again. A row replaced or deleted removes its old file after the commit (a crash in between
   leaves an orphan, removed at the next load), never before.
2. A linked file is accepted only if it is one of these files of the same key and version:
   a regular, read-only file of this user, of the value's size, in a ``.values`` directory,
   its name starting with this key's digest and version. Anything else (another file system,
   ``/proc`` unavailable, a file an agent made up) makes the writer write the bytes itself.
3. Every method but ``open`` runs on the store's writer thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from typing_extensions import Buffer

__all__ = ["FILE_BYTES", "ValueFiles"]

#: Values at least this large get a file of their own; smaller ones stay in their row
#: (below it, the two extra fsyncs of a file, its own and its directory's, cost more than
#: writing the bytes into the row).
FILE_BYTES = 4 * 1024 * 1024
_CHUNK = 16 * 1024 * 1024
_SUFFIX = ".values"


def _prefix(key: str, version: int) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()[:24]}-{version}-"


class ValueFiles:
    """The directory of one store's value files."""

    def __init__(self, db: Path) -> None:
        self.dir = db.with_name(db.name + _SUFFIX)
        self.dir.mkdir(mode=0o700, exist_ok=True)

    def write(self, key: str, version: int, data: Buffer) -> str:
        """Write ``data`` to a new file, fsync'd; returns its name (rule 1).

        Raises:
            OSError: the write failed (the partial file is removed).
        """
        name = _prefix(key, version) + secrets.token_hex(4)
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        try:
            view = memoryview(data).cast("B")
            done = 0
            while done < view.nbytes:
                done += os.write(fd, view[done : done + _CHUNK])
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        os.close(fd)
        return name

    def link(self, key: str, version: int, size: int, fd: int) -> str | None:
        """Hard-link another store's file of this key and version (``fd``, open read-only)
        into this directory; its name, or None when rule 2 refuses it or the link fails."""
        try:
            st = os.fstat(fd)
            source = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return None
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or st.st_mode & 0o222
            or st.st_size != size
            or not source.parent.name.endswith(_SUFFIX)
            or not source.name.startswith(_prefix(key, version))
        ):
            return None
        name = _prefix(key, version) + secrets.token_hex(4)
        target = self.dir / name
        try:
            # By the path the fd names (linkat through /proc/self/fd needs AT_SYMLINK_FOLLOW,
            # which os.link does not pass); the inode is compared after, so a file replaced
            # under that path meanwhile is not taken for ours.
            os.link(source, target)
            linked = os.stat(target)
        except OSError:
            return None  # another file system (EXDEV), the file gone meanwhile
        if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
            self.remove(name)
            return None
        return name

    def sync_dir(self) -> None:
        """Make the directory entries durable (new files and links)."""
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / name).unlink()

    def sweep(self, keep: set[str]) -> None:
        """Remove files no row names (orphans of a crash, rule 1)."""
        for path in self.dir.iterdir():
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    def open(self, name: str, key: str, version: int) -> int | None:
        """A read-only fd of ``name`` if it is ``key``'s file at ``version`` (for a migration
        to link it); None when it is gone or holds another version."""
        if not name.startswith(_prefix(key, version)):
            return None
        try:
            return os.open(self.dir / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

"""The embedded store's durable copy: one SQLite file in WAL mode, written by one thread.

Rules:

1. What is kept: per key, its value (or none after ``delete``) and its version; per key, its
   fencing counter and live lease (owner, wall-clock deadline). Blob holds are not kept: they
   belong to sessions, and no session outlives a node restart.
2. A write is acknowledged only once its row is committed: with ``sync="always"`` the commit
   is fsync'd (``synchronous=FULL``), so it survives a power loss; with ``sync="everysec"`` it
   is written to the OS (it survives the node's crash, kill -9 included) and the WAL is synced
   at least once a second by a checkpoint, so a power loss costs at most about a second.
3. Rows are written in the order they were submitted, by one thread; rows waiting together are
   committed in one transaction (group commit), so concurrent writers share an fsync.
4. The file is the truth after a restart: ``load`` hands back every row and the caller rebuilds
   its in-memory store from them before it serves anyone.
5. One store per file: an exclusive ``flock`` on ``<file>.lock`` is held while it is open, so a
   second node started on the same file (the old one frozen, not dead) is refused instead of
   writing beside it. The kernel drops the lock when the holder dies, kill -9 included.

6. Values of ``FILE_BYTES`` or more live in files of their own beside the database
   (``_valuefiles.py``), so that a migration on this host can hard-link the old node's file
   instead of writing the bytes again; their rows name the file.

The choice of SQLite over LMDB, with the numbers, is in docs/state.md ("Durability").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import BackendUnavailable
from ._valuefiles import FILE_BYTES, ValueFiles

__all__ = ["DurableFile", "LeaseRow", "Sync", "ValueRow"]

Sync = Literal["always", "everysec"]

#: Rows committed in one transaction at most (the rest wait for the next).
_MAX_BATCH = 1024
#: Bytes the WAL file is truncated to after a checkpoint.
_WAL_LIMIT = 64 * 1024 * 1024
#: How often ``everysec`` makes the WAL durable (Redis's ``appendfsync everysec``).
SYNC_INTERVAL = 1.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS vals (key TEXT PRIMARY KEY, version INTEGER NOT NULL, value BLOB)",
    "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, fence INTEGER NOT NULL,"
    " owner TEXT, deadline REAL NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class ValueRow:
    """A key's value (None once deleted) and the highest version it ever had."""

    key: str
    version: int
    value: bytes | memoryview | None
    #: A read-only fd of another store's file of this very value (a migration on this
    #: host): the writer links it instead of writing the bytes, then closes it.
    link_fd: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A key's fencing counter and its lease, the deadline on the wall clock (``time.time``)."""

    key: str
    fence: int
    owner: str | None
    deadline: float


Row = ValueRow | LeaseRow


class DurableFile:
    """Rows committed to one SQLite file by a writer thread; ``submit`` returns a future."""

    def __init__(self, path: Path, sync: Sync = "always") -> None:
        """Open (or create) the file.

        Raises:
            BackendUnavailable: the file cannot be opened or is not a store of ours.
        """
        self.path = path
        self.sync = sync
        self._lock = _lock(path.with_name(path.name + ".lock"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if sync == 'always' else 'NORMAL'}")
            # After a checkpoint the WAL is cut back to this size: a burst of large values
            # does not leave a file of their size behind.
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            for statement in _SCHEMA:
                self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(vals)")}
            if "file" not in columns:  # a file of an earlier release: values only in rows
                self._db.execute("ALTER TABLE vals ADD COLUMN file TEXT")
            self.values = ValueFiles(path)
        except (sqlite3.Error, OSError) as exc:
            os.close(self._lock)
            raise BackendUnavailable(f"cannot open the state file {path}: {exc}") from exc
        self._queue: queue.SimpleQueue[tuple[Row, Future[None]] | None] = queue.SimpleQueue()
        self._failed: BaseException | None = None
        #: Per key, the value file its committed row names (read on the loop for exports).
        self._files: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="fabric-state-file", daemon=True)
        self._thread.start()

    def load(self) -> Iterator[Row]:
        """Every row in the file (call before the first ``submit``)."""
        for key, version, value, file in self._db.execute(
            "SELECT key, version, value, file FROM vals"
        ):
            if file is not None:
                value = self.values.read(file)
                self._files[key] = file
            yield ValueRow(key, version, value)
        self.values.sweep(set(self._files.values()))
        for key, fence, owner, deadline in self._db.execute(
            "SELECT key, fence, owner, deadline FROM leases"
        ):
            yield LeaseRow(key, fence, owner, deadline)

    def submit(self, row: Row) -> Future[None]:
        """Queue ``row``; the future completes once it is committed (rule 2).

        Raises:
            BackendUnavailable: an earlier commit failed or the file is closed.
        """
        if self._failed is not None:
            if isinstance(row, ValueRow) and row.link_fd is not None:
                os.close(row.link_fd)
            raise BackendUnavailable(f"the state file {self.path} failed: {self._failed}")
        done: Future[None] = Future()
        self._queue.put((row, done))
        return done

    def open_value(self, key: str, version: int) -> int | None:
        """A read-only fd of the committed file of ``key`` at ``version``, for a migration
        to link (the caller closes it); None when that value is not in a file of its own."""
        name = self._files.get(key)
        return None if name is None else self.values.open(name, key, version)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the file. Never raises."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            wait = None
            if self.sync == "everysec":
                wait = max(0.0, last_sync + SYNC_INTERVAL - time.monotonic())
            batch, stop = self._take(wait)
            if batch:
                self._commit(batch)
            if self.sync == "everysec" and (stop or time.monotonic() - last_sync >= SYNC_INTERVAL):
                self._checkpoint()
                last_sync = time.monotonic()
            if stop:
                return

    def _take(self, wait: float | None) -> tuple[list[tuple[Row, Future[None]]], bool]:
        """Rows waiting now (at most ``_MAX_BATCH``), after waiting ``wait`` s for the first;
        and whether ``close`` was asked for."""
        batch: list[tuple[Row, Future[None]]] = []
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            return batch, False
        while True:
            if item is None:
                return batch, True
            batch.append(item)
            if len(batch) >= _MAX_BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit(self, batch: list[tuple[Row, Future[None]]]) -> None:
        error: BaseException | None = self._failed
        files = _BatchFiles()
        if error is None:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for row, _ in batch:
                    self._write(row, files)
                if files.created:
                    self.values.sync_dir()
                self._db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                for made in files.created:
                    self.values.remove(made)
                files = _BatchFiles()
                # A store that could not write once cannot promise anything after: every
                # later write fails too, rather than leaving a hole in the history.
                error = self._failed = exc
        for row, _ in batch:
            if isinstance(row, ValueRow) and row.link_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(row.link_fd)
        for old in files.replaced:
            self.values.remove(old)  # after the commit (rule 6, _valuefiles.py rule 1)
        for key, name in files.named.items():
            if name is None:
                self._files.pop(key, None)
            else:
                self._files[key] = name
        for _, done in batch:
            _settle(done, error)

    def _write(self, row: Row, files: _BatchFiles) -> None:
        if isinstance(row, ValueRow):
            name = None
            value = row.value
            if value is not None:
                size = memoryview(value).nbytes
                if row.link_fd is not None:
                    name = self.values.link(row.key, row.version, size, row.link_fd)
                if name is None and size >= FILE_BYTES:
                    name = self.values.write(row.key, row.version, value)
                if name is not None:
                    files.created.append(name)
                    value = None
            found = self._db.execute("SELECT file FROM vals WHERE key = ?", (row.key,)).fetchone()
            if found is not None and found[0] is not None:
                files.replaced.append(found[0])
            files.named[row.key] = name
            self._db.execute(
                "INSERT INTO vals (key, version, value, file) VALUES (?, ?, ?, ?) ON CONFLICT(key)"
                " DO UPDATE SET version = excluded.version, value = excluded.value,"
                " file = excluded.file",
                (row.key, row.version, value, name),
            )
        else:
            self._db.execute(
                "INSERT INTO leases (key, fence, owner, deadline) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET fence = excluded.fence, owner = excluded.owner,"
                " deadline = excluded.deadline",
                (row.key, row.fence, row.owner, row.deadline),
            )

    def _checkpoint(self) -> None:
        # In WAL mode with synchronous=NORMAL, a checkpoint syncs the WAL first: this is the
        # "everysec" fsync. PASSIVE never waits on readers (there are none but us anyway).
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")



@dataclass(slots=True)
class _BatchFiles:
    """Value files one transaction created and replaced, and what each key's row names."""

    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    named: dict[str, str | None] = field(default_factory=dict)


def _lock(path: Path) -> int:
    """Take the exclusive lock of rule 5; returns the fd that holds it.

    Raises:
        BackendUnavailable: another process (or store) holds it, or it cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BackendUnavailable(f"cannot create the state lock {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BackendUnavailable(
            f"the state file is in use by another node ({path} is locked)"
        ) from None
    return fd


def _settle(done: Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(BackendUnavailable(f"state write not committed: {error}"))


def wall_deadline(mono_deadline: float, now_mono: float) -> float:
    """A monotonic deadline as a wall-clock instant, for the file (monotonic time does not
    survive a restart)."""
    return time.time() + (mono_deadline - now_mono)


def mono_deadline(wall: float, now_mono: float, wall_now: Callable[[], float] = time.time) -> float:
    """A wall-clock deadline read from the file, back on this process's monotonic clock."""
    return now_mono + (wall - wall_now())

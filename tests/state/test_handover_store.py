"""The store's side of a migration: values assembled from pieces into a sealed memfd, values
exported as sealed memfds, and large values kept durable in files that a second store on the
host links instead of rewriting. Real memfds, real SQLite files, in-process."""

from __future__ import annotations

import itertools
import os
import sqlite3
from pathlib import Path

import pytest

from fabric.errors import PayloadTooLarge, RemoteProtocolError
from fabric.shm import SealedMapping
from fabric.state import EmbeddedBackend
from fabric.state._pieces import StatePieces
from fabric.state._valuefiles import FILE_BYTES

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


def _piece(size: int, offset: int, version: int = 3, fence: int = 7) -> dict[str, str]:
    return {"size": str(size), "offset": str(offset), "version": str(version), "fence": str(fence)}


async def test_pieces_assemble_into_a_sealed_value_kept_without_a_copy() -> None:
    backend = EmbeddedBackend()
    pieces = StatePieces(backend)
    value = os.urandom(2 * MiB + 5)
    cuts = [0, MiB, 2 * MiB, len(value)]
    for start, end in itertools.pairwise(cuts):
        await pieces.call("restore_piece", "k", "s1", _piece(len(value), start), value[start:end])
    stored, version = await backend.get("k")
    assert bytes(stored) == value and version == 3
    assert isinstance(stored.obj, SealedMapping) and stored.readonly
    assert backend.fence("k") == 7
    # read gives slices of the stored bytes with the value's size and version
    headers, data = await pieces.call("read", "k", "s1", {"offset": str(MiB), "length": "10"}, b"")
    assert bytes(data) == value[MiB : MiB + 10]
    assert headers["size"] == str(len(value)) and headers["version"] == "3"
    await backend.aclose()


async def test_out_of_order_and_orphaned_pieces_are_refused() -> None:
    backend = EmbeddedBackend(max_value_bytes=4 * MiB)
    pieces = StatePieces(backend)
    with pytest.raises(RemoteProtocolError):
        await pieces.call("restore_piece", "k", "s1", _piece(100, 50), b"x" * 50)
    await pieces.call("restore_piece", "k", "s1", _piece(100, 0), b"x" * 50)
    with pytest.raises(RemoteProtocolError):  # another session cannot continue it
        await pieces.call("restore_piece", "k", "s2", _piece(100, 50), b"y" * 50)
    await pieces.call("restore_piece", "k", "s1", _piece(100, 0), b"x" * 50)
    pieces.session_closed("s1")  # the sender went away: its half value is dropped
    with pytest.raises(RemoteProtocolError):
        await pieces.call("restore_piece", "k", "s1", _piece(100, 50), b"x" * 50)
    with pytest.raises(PayloadTooLarge):
        await pieces.call("restore_piece", "k", "s1", _piece(8 * MiB, 0), b"x")
    with pytest.raises(RemoteProtocolError):  # past the end of its value
        await pieces.call("restore_piece", "k", "s1", _piece(10, 0), b"x" * 11)
    await backend.aclose()


async def test_large_values_live_in_files_that_follow_every_change(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    values = path.with_name("s.db.values")
    b = EmbeddedBackend(path=path)
    big = os.urandom(FILE_BYTES)
    await b.put("big", big)
    (first,) = values.iterdir()
    assert first.stat().st_mode & 0o777 == 0o400
    await b.put("big", big[::-1])
    (second,) = values.iterdir()  # the replaced file went after the commit
    assert second != first
    await b.put("small", b"in its row")
    await b.aclose()
    (values / "orphan-of-a-crash").write_bytes(b"x")

    again = EmbeddedBackend(path=path)
    value, version = await again.get("big")
    assert bytes(value) == big[::-1] and version == 2
    assert [p.name for p in values.iterdir()] == [second.name]  # the orphan swept
    await again.delete("big")
    assert list(values.iterdir()) == []
    await again.aclose()


async def test_a_file_from_before_value_files_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE vals (key TEXT PRIMARY KEY, version INTEGER NOT NULL, value BLOB)")
    db.execute("CREATE TABLE leases (key TEXT PRIMARY KEY, fence INTEGER NOT NULL,"
               " owner TEXT, deadline REAL NOT NULL)")
    db.execute("INSERT INTO vals VALUES ('k', 4, ?)", (b"old value",))
    db.commit()
    db.close()
    b = EmbeddedBackend(path=path)
    value, version = await b.get("k")
    assert (bytes(value), version) == (b"old value", 4)
    await b.aclose()


async def test_a_migrated_value_is_linked_into_the_new_store(tmp_path: Path) -> None:
    old = EmbeddedBackend(path=tmp_path / "a" / "s.db")
    new = EmbeddedBackend(path=tmp_path / "b" / "s.db")
    value = os.urandom(FILE_BYTES)
    await old.put("k", value)
    fd, size, version, fence = await old.export_sealed("k")
    stored, _ = await old.get("k")
    assert isinstance(stored.obj, SealedMapping)  # the old store keeps the memfd too
    durable = old.durable_fd("k", version)
    assert durable is not None
    assert old.durable_fd("k", version + 1) is None
    await new.adopt_sealed(
        "k", SealedMapping(fd, size), fd, version=version, fence=fence, durable_fd=durable
    )
    (a,) = (tmp_path / "a" / "s.db.values").iterdir()
    (b,) = (tmp_path / "b" / "s.db.values").iterdir()
    assert a.stat().st_ino == b.stat().st_ino  # one file on disk, two names
    await old.put("k", b"changed at the old node")  # removes only the old store's name
    assert b.exists() and b.read_bytes() == value
    await new.aclose()
    reopened = EmbeddedBackend(path=tmp_path / "b" / "s.db")
    got, got_version = await reopened.get("k")
    assert bytes(got) == value and got_version == version
    await reopened.aclose()
    await old.aclose()


async def test_a_file_of_another_key_is_not_linked_but_rewritten(tmp_path: Path) -> None:
    old = EmbeddedBackend(path=tmp_path / "a" / "s.db")
    new = EmbeddedBackend(path=tmp_path / "b" / "s.db")
    await old.put("other", os.urandom(FILE_BYTES))
    value = os.urandom(FILE_BYTES)
    await old.put("k", value)
    fd, size, version, fence = await old.export_sealed("k")
    wrong = old.durable_fd("other", 1)
    assert wrong is not None
    await new.adopt_sealed(
        "k", SealedMapping(fd, size), fd, version=version, fence=fence, durable_fd=wrong
    )
    (b,) = (tmp_path / "b" / "s.db.values").iterdir()
    assert b.stat().st_nlink == 1 and b.read_bytes() == value
    await new.aclose()
    await old.aclose()

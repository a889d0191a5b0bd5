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
from fabric.protocol import STATE_READ, STATE_RESTORE_PIECE, PieceRequest, ReadAnswer, ReadRequest
from fabric.shm import SealedMapping
from fabric.state import EmbeddedBackend, StateService
from fabric.state._valuefiles import FILE_BYTES

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


KEY = StateService.scoped("a", "k")


async def _put_piece(
    service: StateService, holder: str, size: int, offset: int, data: bytes
) -> dict[str, str]:
    """One ``$state.restore_piece`` through the service's dispatch, as the node runs it."""
    request = STATE_RESTORE_PIECE.encode_request(PieceRequest("k", size, offset, 3, 7))
    assert request is not None
    headers, _ = await service.call(STATE_RESTORE_PIECE.op, "a", holder, request, data)
    return headers


async def test_pieces_assemble_into_a_sealed_value_kept_without_a_copy() -> None:
    backend = EmbeddedBackend()
    service = StateService(backend)
    value = os.urandom(2 * MiB + 5)
    cuts = [0, MiB, 2 * MiB, len(value)]
    answers = [
        await _put_piece(service, "s1", len(value), start, value[start:end])
        for start, end in itertools.pairwise(cuts)
    ]
    assert answers == [{"received": str(MiB)}, {"received": str(2 * MiB)}, {"version": "3"}]
    stored, version = await backend.get(KEY)
    assert bytes(stored) == value and version == 3
    assert isinstance(stored.obj, SealedMapping) and stored.readonly
    assert backend.fence(KEY) == 7
    # read gives slices of the stored bytes with the value's size and version
    ask = STATE_READ.encode_request(ReadRequest("k", MiB, 10))
    assert ask is not None
    headers, data = await service.call(STATE_READ.op, "a", "s1", ask, b"")
    assert bytes(data) == value[MiB : MiB + 10]
    assert STATE_READ.decode_answer(headers) == ReadAnswer(len(value), 3, 7)
    await backend.aclose()


async def test_out_of_order_and_orphaned_pieces_are_refused() -> None:
    backend = EmbeddedBackend(max_value_bytes=4 * MiB)
    service = StateService(backend)
    with pytest.raises(RemoteProtocolError):
        await _put_piece(service, "s1", 100, 50, b"x" * 50)
    await _put_piece(service, "s1", 100, 0, b"x" * 50)
    with pytest.raises(RemoteProtocolError):  # another session cannot continue it
        await _put_piece(service, "s2", 100, 50, b"y" * 50)
    await _put_piece(service, "s1", 100, 0, b"x" * 50)
    await service.session_closed("s1")  # the sender went away: its half value is dropped
    with pytest.raises(RemoteProtocolError):
        await _put_piece(service, "s1", 100, 50, b"x" * 50)
    with pytest.raises(PayloadTooLarge):
        await _put_piece(service, "s1", 8 * MiB, 0, b"x")
    with pytest.raises(RemoteProtocolError):  # past the end of its value
        await _put_piece(service, "s1", 10, 0, b"x" * 11)
    with pytest.raises(RemoteProtocolError, match="needs header 'fence'"):
        await service.call(STATE_RESTORE_PIECE.op, "a", "s1", {"key": "k", "size": "1",
                                                              "offset": "0", "version": "1"}, b"x")
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

"""Measure the two candidate engines of the durable embedded state store on this machine.

    .venv/bin/pip install lmdb        # only for this measurement; not a dependency
    .venv/bin/python scripts/bench_state_store.py [DIR]

The workload is the embedded store's: one row per key holding (version, fence, value), each
acknowledged write committed on its own ("always": fsync per commit) or grouped ("everysec":
written to the OS per commit, synced once a second). Prints p50/p99 per write and writes/s,
and the RSS growth after writing and reading back 64 MiB of 1 MiB values. The numbers and the
decision are in docs/state.md ("Durability").
"""

from __future__ import annotations

import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SMALL = 1024
LARGE = 1024 * 1024
SMALL_WRITES = 400
LARGE_WRITES = 64


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run(write: Callable[[int, bytes], None], count: int, size: int) -> tuple[float, float, float]:
    value = os.urandom(size)
    times = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        write(i, value)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    times.sort()
    p50 = statistics.median(times) * 1e6
    p99 = times[int(len(times) * 0.99) - 1] * 1e6
    return p50, p99, count / total


def sqlite_engine(path: Path, sync: str) -> tuple[Callable[[int, bytes], None], Callable[[], None]]:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if sync == 'always' else 'NORMAL'}")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, version INT, fence INT, value BLOB)")

    def write(i: int, value: bytes) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO kv VALUES (?, ?, 0, ?) ON CONFLICT(key) DO UPDATE SET "
            "version = excluded.version, value = excluded.value",
            (f"k{i % 200}", i, value),
        )
        db.execute("COMMIT")

    def read_all() -> None:
        for (v,) in db.execute("SELECT value FROM kv"):
            del v

    return write, read_all


def lmdb_engine(path: Path, sync: str) -> tuple[Callable[[int, bytes], None], Callable[[], None]]:
    import lmdb  # type: ignore[import-not-found]

    env = lmdb.open(str(path), map_size=2**33, sync=sync == "always", metasync=sync == "always")

    def write(i: int, value: bytes) -> None:
        with env.begin(write=True) as txn:
            txn.put(f"k{i % 200}".encode(), i.to_bytes(8, "little") + value)

    def read_all() -> None:
        with env.begin(buffers=True) as txn:
            for _, v in txn.cursor():
                bytes(v)

    return write, read_all


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="af-sb-"))
    print(f"directory: {base}")
    print(f"{'engine':8} {'mode':9} {'size':>6} {'p50 µs':>9} {'p99 µs':>9} {'writes/s':>9}")
    for name, engine in (("sqlite", sqlite_engine), ("lmdb", lmdb_engine)):
        for sync in ("always", "everysec"):
            for size, count in ((SMALL, SMALL_WRITES), (LARGE, LARGE_WRITES)):
                d = base / f"{name}-{sync}-{size}"
                d.mkdir(parents=True)
                target = d / "db" if name == "sqlite" else d
                write, read_all = engine(target, sync)
                before = _rss_mib()
                p50, p99, rate = _run(write, count, size)
                read_all()
                grown = _rss_mib() - before
                print(
                    f"{name:8} {sync:9} {size:>6} {p50:>9.0f} {p99:>9.0f} {rate:>9.0f}"
                    f"   rss +{grown:.1f} MiB"
                )
    print(f"max rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""The floor rows: a real echo process over a Unix socket and TCP loopback answers every rr
size (and one larger than its first buffer); the hops tool's counting is pure arithmetic."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from bench.hops import calls_per_message, fold_raw, per_message, role_of
from bench.systems._floor import FloorTcpSystem, FloorUnixSystem


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system_cls", [FloorUnixSystem, FloorTcpSystem])
async def test_the_floor_echoes_every_size_between_two_processes(
    system_cls: type[FloorUnixSystem], tmp_path: Path
) -> None:
    system = system_cls()
    env = await system.start_env(tmp_path)
    try:
        assert env["address"].startswith(system.transport + ":")
        client = await system.open_client(env, [], [])
        try:
            for size in (0, 64, 4096, 1 << 20, (1 << 20) + 4096):
                assert client.request(bytes(size)) == size
        finally:
            await client.aclose()
    finally:
        await system.stop_env()


def test_syscalls_per_message_are_the_difference_of_two_runs() -> None:
    small = {"client": collections.Counter({"read": 110, "write": 105, "openat": 40})}
    large = {
        "client": collections.Counter({"read": 210, "write": 205, "openat": 40}),
        "node bench": collections.Counter({"epoll_pwait": 200}),
    }
    table = per_message(small, large, 100)
    assert table["client"] == {"read": 1.0, "write": 1.0}  # start-up calls cancel out
    assert table["node bench"] == {"epoll_pwait": 2.0}


def test_roles_come_from_the_command_line() -> None:
    assert role_of('"python", "-m", "fabric", "node", "--name", "bench1"') == "node bench1"
    assert role_of('"python", "-m", "bench.worker", "--system", "fabric"') == "responder"
    assert role_of('"python", "-m", "bench.hops", "run", "direct"') == "client"
    assert role_of('"python", "-m", "bench.floor", "serve", "tcp"') == "echo"
    assert role_of('"/bin/sh", "-c", "true"') is None


def test_py_spy_raw_output_folds_into_own_time_by_role() -> None:
    raw = "\n".join(
        [
            'process 10:"python -m bench.hops run direct";run (a.py:1);send (sdk/x.py:5) 30',
            'process 10:"python -m bench.hops run direct";run (a.py:1);recv (sdk/y.py:9) 10',
            'process 10:"python -m bench.hops run direct";import (<frozen a>:1) 99',
            'process 10:"python -m bench.hops run direct";'
            'process 11:"python -m bench.worker --system fabric";Runner.run (r.py:2) 5',
            'process 10:"python -m bench.hops run direct";process 12:"python -m x" 7',
        ]
    )
    folded = fold_raw(raw)
    assert folded["client"] == [("send (x.py:5)", 0.75), ("recv (y.py:9)", 0.25)]
    assert folded["responder"] == [("Runner.run (r.py:2)", 1.0)]  # start-up is left out
    inclusive = fold_raw(raw, inclusive=True)
    assert inclusive["client"] == [("send (x.py:5)", 0.75), ("recv (y.py:9)", 0.25)]


def test_python_calls_per_message_are_the_difference_of_two_profiles() -> None:
    small = {
        ("sdk/_stream.py", 120, "send"): (100, 100, 0.001, 0.002, {}),
        ("fabric/cli.py", 1, "main"): (1, 1, 0.5, 0.9, {}),
    }
    large = {
        ("sdk/_stream.py", 120, "send"): (300, 300, 0.003, 0.006, {}),
        ("fabric/cli.py", 1, "main"): (1, 1, 0.5, 0.9, {}),
        ("~", 0, "<built-in method builtins.len>"): (400, 400, 0.0004, 0.0004, {}),
    }
    row = calls_per_message(small, large, 200)
    assert row["calls"] == 3.0  # 1 send + 2 len per message; start-up calls cancel out
    assert row["top"][0] == ("send (_stream.py:120)", 1.0, 10.0)
    assert row["top"][1] == ("<built-in method builtins.len>", 2.0, 2.0)

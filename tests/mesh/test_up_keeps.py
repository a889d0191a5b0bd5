"""``fabric up`` keeps the other nodes when one dies, says so, and restarts it (issue 15, #8)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from procs import Proc, pid_alive

from fabric.mesh._keeper import Keeper, describe_exit

from .conftest import eventually
from .test_cli import _run

pytestmark = pytest.mark.timeout(120)


def _node_pid(socket: Path) -> int:
    """The pid of the ``fabric node`` serving ``socket`` (found in /proc, as ps would)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"node" in args and str(socket).encode() in args:
            return int(proc.name)
    raise AssertionError(f"no node process serves {socket}")


async def _peers(env: dict[str, str], runtime: Path, name: str) -> set[str]:
    code, out = await _run(env, "mesh", "--url", f"unix://{runtime}/{name}.sock", "--json")
    return {p["name"] for p in json.loads(out)["peers"]} if code == 0 else set()


async def test_kill_9_of_one_node_leaves_the_others_and_it_comes_back(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    runtime = tmp_path / "rt"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "up", "--cloud", "2", "--edge", "1",
        "--runtime", str(runtime), env=fabric_env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    up = Proc(process, "fabric up")
    try:
        await up.wait_line("Ctrl-C stops every node", timeout=60)

        async def linked() -> bool:
            return await _peers(fabric_env, runtime, "c1") == {"c2", "e1"}

        await eventually(linked, 40, "c1 linked to c2 and e1")
        others = {n: _node_pid(runtime / f"{n}.sock") for n in ("c1", "e1")}
        victim = _node_pid(runtime / "c2.sock")

        os.kill(victim, signal.SIGKILL)
        line = await up.wait_line("node c2 exited", timeout=30)
        assert "killed by SIGKILL" in line and "restarting in" in line, line
        assert process.returncode is None, "fabric up itself keeps running"
        assert all(pid_alive(pid) for pid in others.values()), "the other nodes keep running"

        await up.wait_line("node c2 restarted", timeout=30)
        assert _node_pid(runtime / "c2.sock") != victim
        await eventually(linked, 40, "c1 linked again to the restarted c2")
        assert {n: _node_pid(runtime / f"{n}.sock") for n in ("c1", "e1")} == others

        up.kill(signal.SIGINT)
        await up.wait_line("mesh stopped", timeout=30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert not any(pid_alive(pid) for pid in others.values())
    finally:
        await up.stop()


async def test_with_no_restart_the_dead_node_stays_down_and_the_rest_runs(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    runtime = tmp_path / "rt"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "up", "--cloud", "2", "--edge", "0", "--no-restart",
        "--runtime", str(runtime), env=fabric_env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    up = Proc(process, "fabric up")
    try:
        await up.wait_line("Ctrl-C stops every node", timeout=60)
        c1 = _node_pid(runtime / "c1.sock")
        os.kill(_node_pid(runtime / "c2.sock"), signal.SIGKILL)
        line = await up.wait_line("node c2 exited", timeout=30)
        assert "not restarting" in line, line
        code, _ = await _run(fabric_env, "mesh", "--url", f"unix://{runtime}/c1.sock", "--json")
        assert code == 0 and pid_alive(c1) and process.returncode is None
    finally:
        await up.stop()


def test_keeper_backs_off_and_starts_over_after_a_stable_run() -> None:
    keeper = Keeper(first=0.5, cap=4.0, stable=60.0)
    assert [keeper.exited("c1", up_for=1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert keeper.exited("c1", up_for=120.0) == 0.5
    assert keeper.restarts("c1") == 6 and keeper.restarts("c2") == 0
    assert Keeper(restart=False).exited("c1", up_for=1.0) is None
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"

"""``fabric up`` as a newcomer runs it: every log line names its node, a fresh healthy mesh
counts no failures, and Ctrl-C leaves no runtime folder behind."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from procs import Proc

from .conftest import eventually

pytestmark = pytest.mark.timeout(120)


def _exists(path: Path) -> bool:
    return path.exists()


async def _mesh_json(env: dict[str, str], url: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "mesh", "--url", url, "--json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_up_names_nodes_in_logs_counts_no_failures_and_cleans_up(
    fabric_env: dict[str, str],
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "up", "--cloud", "2", "--edge", "1",
        env=fabric_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    up = Proc(process, "fabric up")
    errors: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            errors.append(raw.decode().rstrip())

    reader = asyncio.ensure_future(read_stderr())
    try:
        line = await up.wait_line("runtime dir", timeout=60)
        found = re.search(r"runtime dir (\S+)\)", line)
        assert found, line
        runtime = Path(found.group(1))
        assert _exists(runtime)
        await up.wait_line("Ctrl-C stops every node", timeout=60)
        url = f"unix://{runtime}/c1.sock"

        async def linked() -> bool:
            code, out = await _mesh_json(fabric_env, url)
            return code == 0 and {p["name"] for p in json.loads(out)["peers"]} == {"c2", "e1"}

        await eventually(linked, 40, "c1 linked to c2 and e1")
        for name in ("c1", "c2", "e1"):
            code, out = await _mesh_json(fabric_env, f"unix://{runtime}/{name}.sock")
            assert code == 0, out
            stats = json.loads(out)["stats"]
            # Peers that were still starting, and both sides dialling at once, are normal:
            # they have their own counters, not failures.
            assert stats["dial_failures"] == 0 and stats["refused"] == 0, (name, stats)
        up.kill(signal.SIGINT)
        await up.wait_line("mesh stopped", timeout=30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        await asyncio.wait_for(reader, 10)
        assert not _exists(runtime)  # the temp runtime folder went with the mesh
    finally:
        await up.stop()
        reader.cancel()
    peer_lines = [e for e in errors if "peer " in e and " is up" in e]
    assert peer_lines, errors
    for entry in peer_lines:
        assert re.search(r"\[(c1|c2|e1)\] ", entry), entry  # which node logged it

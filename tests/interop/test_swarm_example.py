"""``python examples/swarm/run.py --demo``: the one command of the swarm walkthrough."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from .interop_support import ROOT, child_env

pytestmark = pytest.mark.timeout(180)


async def test_the_swarm_runs_with_one_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "swarm" / "run.py"), "--demo",
        "--listen", f"127.0.0.1:{port}",
        env=child_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 150)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "reviews (3 of 5)" in text or "reviews (4 of 5)" in text, text
    assert "TASK_STATE_COMPLETED" in text, text
    assert "add(20, 22) -> 42" in text, text
    assert "wordcount: Count the words of a text." in text, text

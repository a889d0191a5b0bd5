"""``fabric keys generate``, ``fabric up`` and ``fabric mesh`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
from pathlib import Path

import pytest
from procs import Proc

from fabric.auth import load_keypair, resolve_public_key

from .conftest import eventually

pytestmark = pytest.mark.timeout(90)


async def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabric",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_keys_generate(tmp_path: Path, fabric_env: dict[str, str]) -> None:
    code, out = await _run(fabric_env, "keys", "generate", "--name", "n1", "--dir", str(tmp_path))
    assert code == 0, out
    public, secret = tmp_path / "n1.key", tmp_path / "n1.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub, sec = load_keypair(secret)
    assert len(pub) == 40 and len(sec) == 40 and pub.decode() in out
    assert resolve_public_key(str(public)) == pub


async def test_up_starts_a_mesh_and_ctrl_c_stops_it(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    runtime = tmp_path / "rt"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabric",
        "up",
        "--cloud",
        "2",
        "--edge",
        "1",
        "--runtime",
        str(runtime),
        env=fabric_env,
        stdout=asyncio.subprocess.PIPE,
    )
    up = Proc(process, "fabric up")
    try:
        await up.wait_line("Ctrl-C stops every node", timeout=60)
        assert any(f"FABRIC_URL=unix://{runtime}/e1.sock" in line for line in up.lines)

        async def linked() -> bool:
            code, out = await _run(
                fabric_env, "mesh", "--url", f"unix://{runtime}/c1.sock", "--json"
            )
            return code == 0 and {p["name"] for p in json.loads(out)["peers"]} == {"c2", "e1"}

        await eventually(linked, 40, "c1 linked to c2 and e1")
        code, out = await _run(fabric_env, "mesh", "--url", f"unix://{runtime}/c1.sock")
        assert code == 0 and "role=cloud" in out and "leaf" in out
        up.kill(signal.SIGINT)
        await up.wait_line("mesh stopped", timeout=30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert not list(runtime.glob("*.sock"))  # every node shut down cleanly
    finally:
        await up.stop()


def test_keys_generate_prints_keys_that_look_like_markup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Z85 keys may contain "[...]"; the printed key must be the key, whatever it holds."""
    import zmq
    from typer.testing import CliRunner

    from fabric.cli import app

    public, secret = zmq.curve_keypair()
    marked = b"[red]" + public[5:]  # still 40 Z85 characters
    monkeypatch.setattr(zmq, "curve_keypair", lambda: (marked, secret))
    result = CliRunner().invoke(
        app, ["keys", "generate", "--name", "n2", "--dir", str(tmp_path)], terminal_width=60
    )
    assert result.exit_code == 0, result.output
    assert marked.decode() in result.output

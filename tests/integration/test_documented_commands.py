"""The paths the docs tell a newcomer to take, run from the documented commands themselves.

Each test first finds the command in the document (so a change to the docs that this test
does not follow fails here), then runs it as written, with ``.venv/bin/`` mapped to this
interpreter's bin directory, in a private ``XDG_RUNTIME_DIR``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from procs import Proc, start_agent

from fabric.paths import default_socket_path

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _code_blocks(doc: str) -> list[str]:
    text = (ROOT / doc).read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)


def _documented(doc: str, starts: str) -> list[str]:
    """The command line of ``doc`` that starts with ``starts`` (comment stripped), as argv."""
    for block in _code_blocks(doc):
        for line in block.splitlines():
            if line.startswith(starts):
                command = line.split("#")[0].strip().rstrip("&").strip()
                return command.split()
    raise AssertionError(f"{doc} no longer documents {starts!r}")


def _argv(words: list[str]) -> list[str]:
    first = words[0]
    if first.startswith(".venv/bin/"):
        first = str(BIN / first[len(".venv/bin/") :])
    elif first in ("fabric", "python", "python3"):
        first = str(BIN / first) if first == "fabric" else sys.executable
    if first.endswith("/python"):
        first = sys.executable
    return [first, *words[1:]]


async def _spawn(words: list[str], env: dict[str, str], **kw: object) -> Proc:
    process = await asyncio.create_subprocess_exec(
        *_argv(words), env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, **kw  # type: ignore[arg-type]
    )
    return Proc(process, " ".join(words))


async def _run(words: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *_argv(words), env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_readme_by_hand_node_then_hello_then_status(fabric_env: dict[str, str]) -> None:
    runtime = Path(fabric_env["XDG_RUNTIME_DIR"])
    node = await _spawn(_documented("README.md", ".venv/bin/fabric node"), fabric_env)
    try:
        ready = await node.wait_line("ready")
        # Where the README says the node listens.
        assert f"unix://{runtime}/agent-fabric/node.sock" in ready
        code, out = await _run(_documented("README.md", ".venv/bin/python examples/"), fabric_env)
        assert code == 0, out
        assert out.strip() == "hello, world"
        code, out = await _run(["fabric", "status"], fabric_env)
        assert code == 0, out
        # docs/bench.md's "measure a running node" URL is this node's.
        bench = _documented("docs/bench.md", "fabric bench --url")
        url = bench[bench.index("--url") + 1].replace("$XDG_RUNTIME_DIR", str(runtime))
        code, out = await _run(["fabric", "status", "--url", url], fabric_env)
        assert code == 0, out
    finally:
        await node.stop()


async def test_gateways_doc_node_gateway_curl_and_docs(fabric_env: dict[str, str]) -> None:
    node = await _spawn(_documented("docs/gateways.md", "fabric node"), fabric_env)
    agent: Proc | None = None
    gateway: Proc | None = None
    try:
        ready = await node.wait_line("ready")
        url = re.search(r"unix://\S+", ready)
        assert url
        agent = await start_agent("echo", url.group(0), fabric_env)
        words = _documented("docs/gateways.md", "fabric gateway")
        port = _free_port()  # 8080 may be taken on a shared machine
        words = [w.replace("8080", str(port)) for w in words]
        assert "--url" not in words  # the documented command relies on the default node
        gateway = await _spawn(words, fabric_env)
        line = await gateway.wait_line("gateway ready")
        assert "reachable" in line and "not reachable" not in line
        curl = next(
            line for block in _code_blocks("docs/gateways.md")
            for line in block.splitlines() if line.startswith("curl")
        )
        body = re.search(r"-d '([^']+)'", curl)
        path = re.search(r"localhost:8080(\S+)", curl)
        assert body and path
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            r = await c.post(
                path.group(1), content=body.group(1), headers={"content-type": "application/json"}
            )
            assert r.status_code == 200 and r.json()["text"] == "hi", r.text
            assert (await c.get("/docs")).status_code == 200
    finally:
        for proc in (gateway, agent, node):
            if proc is not None:
                await proc.stop()


def test_the_documented_default_socket_paths(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_socket_path() == tmp_path / "agent-fabric" / "node.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket_path() == Path(f"/tmp/agent-fabric-{os.getuid()}/node.sock")
    for doc in ("README.md", "docs/gateways.md", "docs/bench.md", "docs/operations.md"):
        text = (ROOT / doc).read_text()
        assert "$XDG_RUNTIME_DIR/fabric/" not in text, doc
        assert "/run/user/1000/fabric/" not in text, doc


async def test_readme_local_mesh_starts_and_ctrl_c_stops_it(fabric_env: dict[str, str]) -> None:
    words = _documented("README.md", ".venv/bin/fabric up")
    assert words[1:] == ["up", "--cloud", "3", "--edge", "2"]
    up = await _spawn(words, fabric_env, stderr=asyncio.subprocess.DEVNULL)
    try:
        await up.wait_line("Ctrl-C stops every node", timeout=90)
        assert sum("FABRIC_URL=unix://" in line for line in up.lines) >= 5
        up.kill(signal.SIGINT)
        await up.wait_line("mesh stopped", timeout=30)
        assert await asyncio.wait_for(up.process.wait(), 30) == 0
    finally:
        await up.stop()

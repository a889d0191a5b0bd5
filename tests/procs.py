"""Starting and stopping real node and agent processes for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0  # generous: a busy 2-core machine starts Python slowly


@dataclass
class Proc:
    """A child process whose stdout lines we can await."""

    process: asyncio.subprocess.Process
    label: str
    lines: list[str] = field(default_factory=list)

    async def wait_line(self, needle: str, timeout: float = READY_TIMEOUT) -> str:
        """The first stdout line (from now on) containing ``needle``."""
        assert self.process.stdout is not None

        async def scan() -> str:
            while True:
                raw = await self.process.stdout.readline()  # type: ignore[union-attr]
                if not raw:
                    raise AssertionError(f"{self.label} exited before printing {needle!r}")
                line = raw.decode().rstrip()
                self.lines.append(line)
                if needle in line:
                    return line

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.label} did not print {needle!r} within {timeout}s"
            ) from None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send_line(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.process.returncode is None:
            self.kill(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.kill(signal.SIGKILL)
                await self.process.wait()
        return self.process.returncode


@dataclass
class NodeProcess(Proc):
    socket: Path = Path()
    name: str = ""

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


async def start_node(
    socket: Path, env: dict[str, str], *, name: str = "n1", extra: list[str] | None = None
) -> NodeProcess:
    """Start ``fabric node`` and wait for its ready line."""
    args = [sys.executable, "-m", "fabric", "node", "--name", name, "--socket", str(socket)]
    args += extra or []
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=None
    )
    node = NodeProcess(process, f"node {name}", socket=socket, name=name)
    try:
        await node.wait_line("ready")
    except BaseException:
        await node.stop()
        raise
    return node


async def start_agent(role: str, url: str, env: dict[str, str], *args: str) -> Proc:
    """Start ``tests/agent_roles.py ROLE URL ARGS`` and wait until it says ready."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "agent_roles.py"),
        role,
        url,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE,
        stderr=None,
    )
    proc = Proc(process, f"agent {role}")
    try:
        await proc.wait_line("ready")
    except BaseException:
        await proc.stop()
        raise
    return proc


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll a cheap async predicate until true; fails naming ``what`` after ``timeout``.

    For state only observable by asking (a node's counters), where no event can be awaited.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def raw_frame(header: bytes, payload: bytes = b"") -> bytes:
    """One frame as a hostile client writes it by hand on the node's Unix socket."""
    return struct.pack("<II", len(header), len(payload)) + header + payload


def read_raw_frame(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read exactly one frame (header, payload) from a blocking socket."""

    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    hlen, plen = struct.unpack("<II", exact(8))
    return exact(hlen), exact(plen)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

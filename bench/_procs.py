"""Child processes the bench starts: worker agents, nats-server, a fabric node.

Readiness is an event, never a sleep: a child is ready when it writes its ready line (a worker
prints ``ready {json}``; nats-server logs ``Server is ready``). Every wait is bounded; a child
that does not come up in time is killed and its stderr tail goes into the error. Workers also
watch their stdin: when the bench dies, the pipe closes and they exit on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from fabric.errors import ConnectionLost, Timeout

__all__ = ["Child", "start_child", "worker_argv"]

_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to kill us when the bench dies, so even a
    ``kill -9`` of the bench leaves no nats-server or node behind (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """A started child process and what it said when it became ready."""

    name: str
    proc: asyncio.subprocess.Process
    ready_line: str
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    _drains: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, *, grace_s: float = 3.0) -> None:
        """Stop the child: close its stdin, then SIGTERM, then SIGKILL, each bounded."""
        proc = self.proc
        if proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
                try:
                    await asyncio.wait_for(proc.wait(), grace_s)
                    break
                except TimeoutError:
                    continue
        for task in self._drains:
            task.cancel()
        for task in self._drains:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def describe_failure(self) -> str:
        """The last lines the child wrote, for an error message."""
        return "\n".join(self.tail) or "(no output)"


async def _drain(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            return
        tail.append(line.decode(errors="replace").rstrip())


async def start_child(
    name: str,
    argv: Sequence[str],
    *,
    ready: str,
    ready_on: str = "stdout",
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``argv`` and wait for a line containing ``ready`` on ``ready_on``.

    Both output streams are drained in the background afterwards (a full pipe would block the
    child) and their last lines kept for errors.

    Raises:
        Timeout: no ready line within ``timeout_s``; the child was killed.
        ConnectionLost: the child exited before it was ready.
    """
    argv = _profiled(name, argv)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        preexec_fn=_die_with_parent,
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    watched, other = (
        (proc.stdout, proc.stderr)
        if ready_on == "stdout"
        else (
            proc.stderr,
            proc.stdout,
        )
    )
    child = Child(name=name, proc=proc, ready_line="", tail=tail)
    child._drains.append(asyncio.create_task(_drain(other, tail)))

    async def wait_ready() -> str:
        while True:
            raw = await watched.readline()
            if not raw:
                raise ConnectionLost(f"{name} exited before it was ready")
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            if ready in line:
                return line

    try:
        child.ready_line = await asyncio.wait_for(wait_ready(), timeout_s)
    except TimeoutError:
        await child.stop(grace_s=1.0)
        raise Timeout(
            f"{name} not ready after {timeout_s:.0f} s:\n{child.describe_failure()}"
        ) from None
    except ConnectionLost as exc:
        # The child is gone: its other stream ends by itself, so wait for the drain to have
        # collected the last lines (bounded) before reporting them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(child._drains[0]), 2.0)
        await child.stop(grace_s=1.0)
        raise ConnectionLost(f"{exc}:\n{child.describe_failure()}") from None
    except BaseException:
        await child.stop(grace_s=1.0)
        raise
    child._drains.append(asyncio.create_task(_drain(watched, tail)))
    return child


#: When set, every Python child runs under cProfile and writes its profile into this folder
#: at exit (``python -m bench.hops cprofile`` sets it; see docs/bench.md).
PROFILE_DIR_ENV = "BENCH_PROFILE_DIR"


def _profiled(name: str, argv: Sequence[str]) -> list[str]:
    folder = os.environ.get(PROFILE_DIR_ENV)
    if not folder or len(argv) < 3 or argv[0] != sys.executable or argv[1] != "-m":
        return list(argv)
    out = os.path.join(folder, "".join(c if c.isalnum() else "-" for c in name) + ".prof")
    return [argv[0], "-m", "cProfile", "-o", out, *argv[1:]]


def worker_argv(system: str, plan_json: str, env_json: str) -> list[str]:
    """Command line of one worker process (``python -m bench.worker``)."""
    return [
        sys.executable,
        "-m",
        "bench.worker",
        "--system",
        system,
        "--plan",
        plan_json,
        "--env",
        env_json,
    ]

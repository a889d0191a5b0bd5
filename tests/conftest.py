"""Shared fixtures: real node processes and real agent processes, each awaited by its ready
line, never by a sleep."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from procs import NodeProcess, start_agent, start_node
from state._redis_proc import RedisProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """Our own redis-server on a free port, never the shared one on 6379."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fabric_env(tmp_path: Path) -> dict[str, str]:
    """Environment for child processes: this checkout importable, no inherited FABRIC_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    return env


@pytest.fixture
async def node(tmp_path: Path, fabric_env: dict[str, str]) -> AsyncIterator[NodeProcess]:
    """One real ``fabric node`` process on a private socket."""
    proc = await start_node(tmp_path / "node.sock", fabric_env, name="n1")
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.fixture
async def agent_procs(fabric_env: dict[str, str]) -> AsyncIterator[Callable[..., Any]]:
    """Factory for agent processes (tests/procs.py roles); all are killed at teardown."""
    started: list[Any] = []

    async def factory(role: str, url: str, *args: str) -> Any:
        proc = await start_agent(role, url, fabric_env, *args)
        started.append(proc)
        return proc

    try:
        yield factory
    finally:
        await asyncio.gather(*(p.stop() for p in started))

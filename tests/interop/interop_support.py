"""Shared pieces of the interop tests (conftest.py holds the fixtures; a module name of its own,
because other test directories have a conftest too)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from a2a.types.a2a_pb2 import Role, SendMessageConfiguration, SendMessageRequest
from procs import READY_TIMEOUT, NodeProcess, Proc

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "swarm" / "agents.py"
#: The gateway's A2A message limit in these tests (small, so an oversized message is cheap).
A2A_MAX = 64 * 1024


@dataclass
class Swarm:
    node: NodeProcess
    env: dict[str, str]
    tmp: Path
    agents: dict[str, Proc] = field(default_factory=dict)


def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "SWARM_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    return env


async def start_role(role: str, url: str, env: dict[str, str]) -> Proc:
    """Start one swarm role and wait for its ready line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENTS), role, url, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    proc = Proc(process, f"swarm {role}")
    try:
        await proc.wait_line("ready", timeout=READY_TIMEOUT * 2)
    except BaseException:
        await proc.stop()
        raise
    return proc


def text_request(text: str, *, immediately: bool = False) -> SendMessageRequest:
    """An A2A SendMessage of one text part from the user (``immediately``: don't block)."""
    request = SendMessageRequest()
    request.message.role = Role.ROLE_USER
    request.message.message_id = uuid.uuid4().hex
    request.message.parts.add().text = text
    if immediately:
        request.configuration.CopyFrom(SendMessageConfiguration(return_immediately=True))
    return request

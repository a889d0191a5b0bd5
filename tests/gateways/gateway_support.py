"""Shared pieces of the gateway tests (conftest.py holds the fixtures; a module name of its
own, because tests/webrtc has a conftest too)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from procs import NodeProcess, Proc

#: The module node's payload limit (small, so a 413 from the node's limit is cheap to provoke).
NODE_MAX_PAYLOAD = 1024 * 1024
#: The module gateways' body limit.
MAX_BODY = 4 * 1024 * 1024

AUTH_FILE = """
[agents.alice]
credential = "alice-secret"
publish = { allow = ["svc.>", "events.>", "llm.>"] }
subscribe = { allow = ["events.>"] }

[agents.bob]
credential = "bob-secret"
publish = { allow = ["events.bob.>"] }
subscribe = { allow = ["events.bob.>"] }
"""


@dataclass
class Fabric:
    node: NodeProcess
    env: dict[str, str]
    tmp: Path
    agents: dict[str, Proc] = field(default_factory=dict)

    @property
    def tcp_url(self) -> str:
        """The node's ZeroMQ endpoint (no shared memory, no direct paths: every frame is
        checked by the node)."""
        found = re.search(r"tcp://[0-9.]+:[0-9]+", " ".join(self.node.lines))
        assert found, self.node.lines
        return found.group(0)


def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    return env

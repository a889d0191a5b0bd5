"""Shared pieces of the WebRTC tests (fixtures are in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from procs import NodeProcess, Proc

AUTH_FILE = """
[agents.edge-1]
credential = "edge-secret"
publish = { allow = [">"] }
subscribe = { allow = [">"] }
"""


@dataclass
class Cloud:
    node: NodeProcess
    env: dict[str, str]
    tmp: Path
    gateway: str = ""
    auth_gateway: str = ""
    agents: dict[str, Proc] = field(default_factory=dict)

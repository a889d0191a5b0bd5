"""What the node lets this connection do, read from its WELCOME.

Whether the agent may map the node's shared-memory pool and use direct paths to other local
agents depends on whether it shares the node's host, which only the node knows for sure (it
sees which listener the agent came in on). A node says so in its WELCOME (``"paths"``); an
older node that does not is judged as before, by the URL (``unix://`` means the same host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.protocol import WelcomeKey, WelcomePath

__all__ = ["Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The data paths one connection to a node may use."""

    #: The node's shared-memory pool can be mapped (large payloads go by descriptor).
    shared_memory: bool = False
    #: The node took our direct socket: its directory may send local requesters to us,
    #: and it answers our ``$node.resolve``.
    direct: bool = False

    @classmethod
    def from_welcome(cls, welcome: dict[str, Any], url: str) -> Capabilities:
        """From the node's WELCOME; ``url`` only decides for a node that does not say."""
        paths = welcome.get(WelcomeKey.PATHS)
        pool = isinstance(welcome.get(WelcomeKey.POOL), dict)
        if isinstance(paths, dict):
            return cls(
                shared_memory=pool and bool(paths.get(WelcomePath.SHM)),
                direct=bool(paths.get(WelcomePath.DIRECT)),
            )
        same_host = url.startswith("unix://")
        return cls(shared_memory=pool and same_host, direct=same_host)

"""Where a node listens by default, so that agents find it with zero configuration."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_socket_path", "default_url", "runtime_dir"]


def runtime_dir() -> Path:
    """The per-user runtime directory (``$XDG_RUNTIME_DIR/agent-fabric``, else ``/tmp``)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / "agent-fabric"
    return Path(f"/tmp/agent-fabric-{os.getuid()}")


def default_socket_path() -> Path:
    """The Unix socket a node listens on when none is configured."""
    return runtime_dir() / "node.sock"


def default_url() -> str:
    """``FABRIC_URL`` if set, else the local node's Unix socket."""
    return os.environ.get("FABRIC_URL") or f"unix://{default_socket_path()}"

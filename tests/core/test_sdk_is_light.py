"""An agent that only messages needs pyzmq, msgpack and pydantic: nothing of the node,
the CLI, gateways, bench or optional extras is imported by ``import sdk``."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "uvloop", "typer", "rich", "pydantic_settings", "fabric.node", "fabric.cli", "gateways",
    "bench", "opentelemetry", "redis", "aiortc", "fastapi", "fabric.state",
    # The agent protocols are opt-in (`sdk.a2a`, `sdk.mcp`, the [agents] extra).
    "a2a", "mcp", "mcp_types", "sdk.a2a", "sdk.mcp",
)


def test_importing_the_sdk_pulls_in_no_node_or_extras() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys, sdk; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    loaded = json.loads(out.stdout)
    offenders = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert offenders == []

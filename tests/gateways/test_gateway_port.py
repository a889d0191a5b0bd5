"""The gateway (and so its /dashboard) on a port already in use: one line, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def _gateway(listen: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env.update(PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "fabric", "gateway", "--listen", listen],
        env=env, capture_output=True, text=True, timeout=50,
    )


def test_port_in_use_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _gateway(f"127.0.0.1:{port}", tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "FABRIC_GATEWAY_LISTEN" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("listen", ["nonsense", "no-such-host.invalid:8080"])
def test_bad_listen_address_is_one_line(tmp_path: Path, listen: str) -> None:
    done = _gateway(listen, tmp_path)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "listen" in done.stderr and "Traceback" not in done.stderr

"""deploy/systemd: the example node.toml loads and runs, and the units pass systemd-analyze."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fabric.config import load_settings

from ._files import SYSTEMD, clean_fabric_env, fabric_cli, unknown_setting, unknown_toml_keys

UNITS = ["agent-fabric-node.service", "agent-fabric-node@.service"]
INSTALLED_FABRIC = "/opt/agent-fabric/bin/fabric"


def _unit(name: str) -> str:
    return (SYSTEMD / name).read_text()


def _directives(text: str) -> list[tuple[str, str]]:
    return [
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in text.splitlines())
        if _ and not k.lstrip().startswith(("#", ";", "["))
    ]


def test_example_node_toml_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_fabric_env(monkeypatch)
    settings = load_settings(SYSTEMD / "node.toml")
    assert str(settings.socket) == "/run/agent-fabric/node.sock"
    assert settings.listen == "tcp://0.0.0.0:4250"


def test_commented_examples_in_node_toml_are_real_settings() -> None:
    """`# key = value` lines are there to be uncommented: they must load when they are."""
    lines = (SYSTEMD / "node.toml").read_text().splitlines()
    examples = [m[1] for line in lines if (m := re.match(r"#\s?([a-z_]+ = .*)$", line))]
    assert len(examples) >= 6
    table = tomllib.loads("\n".join(examples))
    assert {"cluster", "seeds", "leaf_of", "curve_key", "curve_allowed"} <= set(table)
    assert unknown_toml_keys(table) == []
    assert unknown_toml_keys({"seed": 1, "pool": {"treshold": 1}}) == ["seed", "pool.treshold"]


def test_unit_runs_the_node_with_the_example_config() -> None:
    text = _unit("agent-fabric-node.service")
    (start,) = [v for k, v in _directives(text) if k == "ExecStart"]
    assert start == f"{INSTALLED_FABRIC} node --config /etc/agent-fabric/node.toml"
    d = dict(_directives(text))
    assert d["Type"] == "simple" and d["Restart"] == "on-failure"
    assert d["RuntimeDirectory"] == "agent-fabric"
    assert d["NoNewPrivileges"] == "yes" and d["ProtectSystem"] == "strict"
    assert d["PrivateTmp"] == "yes"
    envs = [v.split("=", 1) for k, v in _directives(text) if k == "Environment"]
    socket = dict(envs)["FABRIC_SOCKET"]
    assert socket == f"/run/{d['RuntimeDirectory']}/node.sock"
    for name, _ in envs:
        if name.startswith("FABRIC_"):
            assert unknown_setting(name) is None, name
    done = subprocess.run(
        [*fabric_cli(), "node", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--config" in done.stdout, done.stderr


def test_template_has_the_same_hardening() -> None:
    def hardening(name: str) -> list[tuple[str, str]]:
        text = _unit(name).split("# -- hardening", 1)[1]
        return _directives(text)

    one, many = hardening(UNITS[0]), hardening(UNITS[1])
    assert len(one) >= 15 and one == many
    d = dict(_directives(_unit(UNITS[1])))
    assert d["RuntimeDirectory"] == "agent-fabric/%i"
    assert "--config /etc/agent-fabric/%i.toml" in d["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this checkout's fabric.
    text = _unit(unit)
    assert INSTALLED_FABRIC in text
    local = tmp_path / unit.replace("@.", "@test.")
    if "@" in unit:
        (tmp_path / unit).write_text(text.replace(INSTALLED_FABRIC, fabric_cli()[0]))
    local.write_text(text.replace(INSTALLED_FABRIC, fabric_cli()[0]))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # verify exits 0 on unknown keys and bad values: any word about our file is a failure.
    noise = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if local.stem in line or unit in line
    ]
    assert done.returncode == 0 and noise == [], done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_verify_check_catches_a_typo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.service"
    bad.write_text(f"[Service]\nExecStart={sys.executable}\nMemoryDenyWriteExecut=yes\n")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "bad.service" in done.stdout + done.stderr


@pytest.mark.timeout(60)
async def test_example_config_runs_a_node_that_answers_the_healthcheck(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    """A real node from deploy/systemd/node.toml, with the overrides the unit itself applies
    (the socket) and a free loopback port, answers `fabric status` as the probes ask it."""
    socket = tmp_path / "run" / "node.sock"
    env = dict(fabric_env, FABRIC_SOCKET=str(socket), FABRIC_LISTEN="tcp://127.0.0.1:*")
    node = await asyncio.create_subprocess_exec(
        *fabric_cli(),
        "node",
        "--config",
        str(SYSTEMD / "node.toml"),
        "--name",
        "unit-test",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert node.stdout is not None
        line = await asyncio.wait_for(node.stdout.readline(), 30)
        assert b"ready" in line and b"site cloud" in line, line
        status = await asyncio.create_subprocess_exec(
            *fabric_cli(),
            "status",
            "--url",
            f"unix://{socket}",
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(status.communicate(), 30)
        assert status.returncode == 0 and b'"node": "unit-test"' in out
    finally:
        node.terminate()
        assert await asyncio.wait_for(node.wait(), 15) == 0
    missing = await asyncio.create_subprocess_exec(
        *fabric_cli(),
        "status",
        "--url",
        f"unix://{socket}",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(missing.wait(), 30) == 1  # a stopped node fails the check

"""``fabric --help`` reads as a newcomer expects: flags without a value, a version, and the
valid names of --scenarios and --systems."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.scenarios import registered
from bench.systems import system_names
from fabric.cli import app

COMMANDS = [
    [], ["node"], ["status"], ["demo"], ["gateway"], ["up"], ["mesh"], ["bench"],
    ["keys", "generate"], ["agent", "migrate"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "fabric")
def test_help_shows_no_bool_value_after_flags(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_value_options_keep_their_type() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], terminal_width=100)
    assert "<int" in result.output  # --repeats
    assert "--quick " in result.output


def test_bench_help_lists_the_valid_scenarios_and_systems() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], terminal_width=200)
    flat = " ".join(result.output.split())
    for name in registered():
        assert name in flat
    for name in system_names():
        assert name in flat
    assert "docs/bench.md" in flat


def test_fabric_version_as_a_user_types_it() -> None:
    fabric = Path(sys.executable).with_name("fabric")
    command = [str(fabric)] if fabric.exists() else [sys.executable, "-m", "fabric"]
    out = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == f"agent-fabric {version('agent-fabric')}"

"""Installing the project prints no deprecation banner (the check `pip install -e .` shows)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "Apache-2.0"
    # PEP 639 strings need setuptools 77; build isolation fetches it, whatever is installed.
    assert "setuptools>=77" in doc["build-system"]["requires"]


@pytest.mark.timeout(120)
def test_building_the_metadata_warns_about_nothing(tmp_path: Path) -> None:
    script = (
        "import warnings; warnings.simplefilter('always');"
        "from setuptools import build_meta;"
        f"build_meta.prepare_metadata_for_build_wheel({str(tmp_path)!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in (done.stdout + done.stderr).lower()
    metadata = next(tmp_path.glob("*.dist-info")).joinpath("METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata


@pytest.mark.timeout(120)
def test_the_editable_install_prints_no_banner(tmp_path: Path) -> None:
    # What `pip install -e .` runs in its build environment; pip shows the warnings it
    # emits (the "!!" banners), not its log lines.
    script = (
        "import warnings; warnings.simplefilter('always');"
        "from setuptools import build_meta;"
        f"print(build_meta.build_editable({str(tmp_path)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr
    noise = done.stderr.lower()
    assert "!!" not in noise and "warning:" not in noise and "deprecat" not in noise, noise

"""Whole runs: optional systems that cannot run are skipped with their hint, and a real quick
run of the aiohttp baseline writes a valid JSON document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench.systems
from bench._harness import QUICK
from bench._results import build_document, validate_document
from bench._runner import RunConfig, run_bench
from bench.systems import System
from bench.systems._nats import NatsSystem
from bench.systems._zenoh import ZenohSystem

ROOT = Path(__file__).resolve().parents[2]


class _NeedsMissingModule(ZenohSystem):
    name = "zenoh-missing"
    modules = ("zenoh_module_that_does_not_exist",)


def test_missing_module_or_binary_is_a_skip_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reason = _NeedsMissingModule().skip_reason()
    assert reason is not None and "zenoh_module_that_does_not_exist" in reason
    monkeypatch.setenv("PATH", str(tmp_path))  # no nats-server on this PATH
    reason = NatsSystem().skip_reason()
    assert reason is not None and "nats-server" in reason


@pytest.mark.timeout(60)
async def test_a_run_reports_unavailable_systems_as_skipped_not_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(bench.systems.SYSTEMS, _NeedsMissingModule.name, _NeedsMissingModule)
    monkeypatch.setenv("PATH", str(tmp_path))
    config = RunConfig(["rr"], ["nats", "zenoh-missing"], QUICK)
    record = await run_bench(config)
    statuses = {s.name: s for s in record.systems}
    assert statuses["nats"].status == "skipped"
    assert "nats-server" in statuses["nats"].reason
    assert "nats-server" in statuses["nats"].hint
    assert statuses["zenoh-missing"].status == "skipped"
    assert statuses["zenoh-missing"].hint == ZenohSystem.hint
    # Only the reference rows (the floor of rr) were measured.
    assert {o.system for o in record.outcomes} <= {"floor-unix", "floor-tcp"}
    document = build_document(record)
    assert validate_document(document) == []


def test_every_optional_system_has_an_install_hint() -> None:
    for cls in bench.systems.SYSTEMS.values():
        system: System = cls()
        if system.modules or system.binaries:
            assert system.hint, cls.name


def _has_sdk() -> bool:
    try:
        from sdk import connect  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "system",
    [
        "aiohttp",
        pytest.param(
            "fabric", marks=pytest.mark.skipif(not _has_sdk(), reason="sdk.connect not built")
        ),
    ],
)
def test_quick_rr_run_writes_valid_json(system: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "120",
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    env = {k: v for k, v in env.items() if not k.startswith("FABRIC_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--systems",
            system,
            "--scenarios",
            "rr",
            "--repeats",
            "2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert validate_document(document) == []
    assert document["config"]["scenarios"] == ["rr"]
    assert [(s["name"], s["status"]) for s in document["systems"]] == [
        (system, "ok"), ("floor-unix", "ok"), ("floor-tcp", "ok")
    ]
    rows = {(r["case"], r["system"]): r for r in document["results"] if r["system"] == system}
    assert set(rows) == {("rr/64B", system), ("rr/4KiB", system), ("rr/1MiB", system)}
    for row in rows.values():
        assert row["status"] == "ok"
        assert len(row["repeats"]) == 2
        summary = row["summary"]
        assert 0 < summary["p50_min_us"] <= summary["p50_us"] <= summary["p50_max_us"]
        assert summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]
    assert document["machine"]["cores"] >= 1
    # A shared machine's numbers are read next to its load.
    assert document["machine"]["load_average_start"] >= 0
    assert document["machine"]["load_average_end"] >= 0
    assert "load average" in done.stdout
    assert document["machine"]["packages"]
    assert "rr/64B" in done.stdout  # the table was printed


def test_bad_selection_exits_with_2_and_names_the_choices(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--scenarios", "rr,warp"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "warp" in done.stdout and "fanout" in done.stdout

"""The README's main job, as CI runs it: ``fabric bench --quick`` end to end, every scenario
and every system this machine has, writing JSON that passes the schema. Speed is not judged
here; that is what the bench itself reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._results import validate_document

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_fabric_bench_quick_runs_every_scenario_and_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env |= {"PYTHONPATH": str(ROOT), "COLUMNS": "140", "XDG_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "fabric", "bench", "--quick", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=380,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    document = json.loads(out.read_text())
    assert validate_document(document) == []
    fabric = [r for r in document["results"] if r["system"] == "fabric"]
    cases = {r["case"].split("/")[0] for r in fabric}
    assert {"rr", "fanout", "map", "bigfan", "stream", "throughput"} <= cases
    assert all(r["status"] == "ok" for r in fabric), [
        (r["case"], r.get("reason")) for r in fabric if r["status"] != "ok"
    ]
    # Across two nodes: every scenario but bigfan (shared memory is one host's).
    crossnode = [r for r in document["results"] if r["system"] == "fabric-crossnode"]
    assert {r["case"].split("/")[0] for r in crossnode} == {
        "rr", "fanout", "map", "stream", "throughput"
    }
    assert all(r["status"] == "ok" for r in crossnode), [
        (r["case"], r.get("reason")) for r in crossnode if r["status"] != "ok"
    ]
    # The direct path across the two nodes: the request patterns only.
    direct = [r for r in document["results"] if r["system"] == "fabric-crossnode-direct"]
    assert {r["case"].split("/")[0] for r in direct} == {"rr", "fanout", "map"}
    assert all(r["status"] == "ok" for r in direct), [
        (r["case"], r.get("reason")) for r in direct if r["status"] != "ok"
    ]
    # The floor rows sit under every rr case, and each fabric row has its ratio columns.
    floors = {(r["case"], r["system"]) for r in document["results"] if "floor" in r["system"]}
    assert ("rr/64B", "floor-unix") in floors and ("rr/1MiB", "floor-tcp") in floors
    assert "vs aiohttp" in done.stdout and "vs NATS" in done.stdout

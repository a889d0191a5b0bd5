"""Agent migration between two nodes of one host: time to move an agent with 1 MiB and with
64 MiB of leased state (DESIGN.md target: 64 MiB under 50 ms).

    python -m bench.migration [--sizes-mib 1,64] [--repeats 5] [--json PATH]

Starts two ``fabric node`` processes in a cluster on loopback (each with its own embedded
state store, so the state is carried over), one agent that migrates back and forth, and
reports p50 / min / max of the migration time per size. Bounded: every wait has a timeout and
the nodes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

_READY_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_node(name: str, toml: str, tmp: Path) -> asyncio.subprocess.Process:
    config = tmp / f"{name}.toml"
    config.write_text(toml)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "node", "--name", name, "--socket",
        str(tmp / f"{name}.sock"), "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), _READY_S)
    if b"ready" not in line:
        raise RuntimeError(f"node {name} did not start: {line!r}")
    return proc


async def _linked(url: str, peer: str) -> bool:
    from sdk import connect

    async with connect("bench-probe", url, reconnect=False, direct=False) as probe:
        mesh = (await probe.node_status()).get("mesh") or {}
        return any(p["name"] == peer for p in mesh.get("peers", []))


async def run(sizes_mib: list[int], repeats: int) -> dict[str, Any]:
    from sdk import connect

    with tempfile.TemporaryDirectory(prefix="fabric-migrate-") as tmpdir:
        tmp = Path(tmpdir)
        cluster = {n: f"tcp://127.0.0.1:{_free_port()}" for n in ("m1", "m2")}
        procs = []
        try:
            for name in cluster:
                seeds = json.dumps([u for n, u in cluster.items() if n != name])
                toml = f'cluster = "{cluster[name]}"\nseeds = {seeds}\n'
                procs.append(await _start_node(name, toml, tmp))
            urls = {n: f"unix://{tmp / f'{n}.sock'}" for n in cluster}
            for _ in range(200):
                if await _linked(urls["m1"], "m2"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the two nodes did not link")
            results: dict[str, Any] = {}
            for size in sizes_mib:
                state = os.urandom(size * 1024 * 1024)
                times: list[float] = []
                async with connect("migrating-agent", urls["m1"]) as agent:
                    await agent.subscribe("agents.migrating.inbox")
                    await agent.state.acquire("context", ttl=120)
                    await agent.state.put("context", state)
                    where = "m1"
                    for _ in range(repeats + 1):  # the first move is warm-up
                        where = "m2" if where == "m1" else "m1"
                        report = await agent.migrate(urls[where], timeout=60)
                        times.append(report.elapsed * 1000)
                    value, _ = await agent.state.get("context")
                    if bytes(value) != state:
                        raise RuntimeError("state changed in transit")
                measured = times[1:]
                results[f"{size}MiB"] = {
                    "p50_ms": statistics.median(measured),
                    "min_ms": min(measured),
                    "max_ms": max(measured),
                    "repeats": len(measured),
                }
            return results
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="1,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes_mib.split(",") if s]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(run(sizes, args.repeats))
    for size, r in results.items():
        print(
            f"migrate with {size:>6} of state: p50 {r['p50_ms']:.1f} ms "
            f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f}, {r['repeats']} moves)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

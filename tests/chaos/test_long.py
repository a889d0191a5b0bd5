"""Long chaos runs, under the ``soak`` marker (deselected by default; ``pytest -m soak``):

- a soak of mixed traffic against one node (default 10 minutes: ``FABRIC_SOAK_SECONDS``),
  sampling the node's RSS, judged by the checker at the end;
- atheris fuzzing of the frame decoder (``FABRIC_FUZZ_RUNS`` inputs) and of a live node over
  its Unix socket (``FABRIC_FUZZ_SECONDS``).

Each prints its figures; docs/reliability.md keeps those of the last run.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

import pytest
from procs import start_node

from sdk import connect

from . import drive
from .checker import check_messages, check_requests, check_writes
from .history import History

pytestmark = pytest.mark.soak

HERE = Path(__file__).resolve().parent
SOAK_SECONDS = float(os.environ.get("FABRIC_SOAK_SECONDS", "600"))
FUZZ_RUNS = int(os.environ.get("FABRIC_FUZZ_RUNS", "2000000"))
FUZZ_SECONDS = int(os.environ.get("FABRIC_FUZZ_SECONDS", "300"))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.timeout(int(SOAK_SECONDS) + 300)
async def test_soak_mixed_traffic_keeps_memory_flat_and_every_guarantee(
    tmp_path: Path, fabric_env: dict[str, str], agent_procs
) -> None:
    node = await start_node(tmp_path / "node.sock", fabric_env, name="soak")
    history = History()
    samples: list[tuple[float, float]] = []
    try:
        await agent_procs("echo", node.url)
        async with (
            connect("client", node.url, direct=False) as client,
            connect("pub", node.url) as pub,
            connect("sub", node.url) as sub,
            connect("writer", node.url) as writer,
        ):
            await sub.subscribe("soak.events", callback=drive.recorder(history, "sub"))
            await sub.flush()
            stop = asyncio.Event()
            start = time.monotonic()
            count = int(SOAK_SECONDS * 100)  # 100 publishes a second
            work = asyncio.gather(
                drive.requests(
                    client, history, "svc.echo", until=stop, timeout=2, pause=0.01,
                    max_ops=count,
                ),
                drive.publishes(pub, history, "soak.events", count=count, interval=0.01),
                drive.writes(writer, history, keys=50, until=stop, max_ops=count),
            )  # fmt: skip
            task = asyncio.ensure_future(work)
            while time.monotonic() - start < SOAK_SECONDS and not task.done():
                samples.append((time.monotonic() - start, _rss_mib(node.pid)))
                await asyncio.sleep(5)  # the sampling period
            stop.set()
            await asyncio.wait_for(task, 120)
            await pub.flush()
            await sub.flush()
            final = await drive.read_back(writer, 50)
    finally:
        await node.stop()
    requests = check_requests(history.events)
    messages = check_messages(history.events, ["sub"])
    writes = check_writes(history.events, final)
    first = statistics.median(r for t, r in samples if t < 60)
    last = statistics.median(r for t, r in samples if t >= samples[-1][0] - 60)
    print(
        f"soak {SOAK_SECONDS:.0f} s: requests {dict(requests.counts)}; "
        f"messages {dict(messages.counts)}; writes {dict(writes.counts)}; "
        f"node RSS first minute {first:.1f} MiB, last minute {last:.1f} MiB, "
        f"max {max(r for _, r in samples):.1f} MiB"
    )
    assert not requests.violations("reply_or_typed_error"), requests.explain(
        "reply_or_typed_error"
    )
    assert not messages.violations("at_most_once"), messages.explain("at_most_once")
    assert messages.counts["lost"] == 0, "no fault, no loss"
    assert not writes.violations("acknowledged_write_durable")
    assert last < first * 1.25 + 16, f"node RSS grew from {first:.1f} to {last:.1f} MiB"


async def _fuzz(target: str, *args: str, env: dict[str, str]) -> str:
    pytest.importorskip("atheris", reason="the fuzz runs need atheris (the [dev] extra)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "fuzz_targets.py"), target, *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    return text


def _summary(text: str) -> str:
    done = re.findall(r"Done (\d+) (?:runs )?in (\d+) second", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    runs, secs = done[-1] if done else ("?", "?")
    return f"{runs} inputs in {secs} s, coverage {cov[-1][0] if cov else '?'} edges"


@pytest.mark.timeout(FUZZ_SECONDS * 3 + 600)
async def test_fuzz_frame_decoder_raises_only_typed_errors(fabric_env: dict[str, str]) -> None:
    text = await _fuzz(
        "decoder", f"-atheris_runs={FUZZ_RUNS}", f"-max_total_time={FUZZ_SECONDS}",
        env=fabric_env,
    )  # fmt: skip
    print(f"fuzz frame decoder: {_summary(text)}")


@pytest.mark.timeout(FUZZ_SECONDS * 3 + 600)
async def test_fuzz_a_live_node_over_its_socket(
    tmp_path: Path, fabric_env: dict[str, str], agent_procs
) -> None:
    node = await start_node(tmp_path / "node.sock", fabric_env, name="fuzzed")
    try:
        await agent_procs("echo", node.url)
        env = {**fabric_env, "FUZZ_NODE_SOCKET": str(node.socket)}
        text = await _fuzz("node", f"-max_total_time={FUZZ_SECONDS}", env=env)
        rss = _rss_mib(node.pid)
        async with connect("client", node.url, direct=False) as client:
            reply = await client.request("svc.echo", b"still serving", timeout=10)
            assert reply.data == b"still serving"
            status = await client.node_status()
        print(
            f"fuzz node over its socket: {_summary(text)}; node alive and serving, "
            f"RSS {rss:.1f} MiB after, status counters {status.get('stats', {})}"
        )
    finally:
        assert node.process.returncode is None, "the node died under fuzzing"
        await node.stop()

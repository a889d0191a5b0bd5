"""Memory of N agents on one host that each need the same blob: private copies against one
shared blob (the state tier's sealed memfd), measured as PSS in one run.

    python -m bench.memory [--size-mib 256] [--agents 16] [--json PATH]

Starts a node of its own (private socket, embedded state backend) and, twice, ``--agents``
agent processes:

(a) private: each agent holds the blob's bytes in its own memory (built and touched, as it
    would be after receiving a copy);
(b) shared: this process shares the blob once (``agent.state.share``), every agent opens it
    (``agent.state.open_blob``: a read-only map of the node's sealed memfd) and reads one byte
    of every page, so every page is mapped in every agent.

PSS (proportional set size, ``/proc/PID/smaps_rollup``) charges each page to the processes
mapping it in equal parts, so N processes sharing one page count it once in total. It is read
for every agent before it takes the blob and again while it holds it; the difference, summed
over the agents, is the memory the blob costs them. The saving is 1 - (b) / (a); the target
(DESIGN.md) is at least 93%: one copy instead of sixteen. The node maps the blob too, as one
more reader, so the agents' sum is 16/17 of one copy; the host figure adds the PSS of the
node's mapping of the blob (``/proc/PID/smaps``), so it counts the one copy whole.

Bounded: every wait has a timeout; every child is stopped at the end, also on error, and is
killed by the kernel if this process dies (PR_SET_PDEATHSIG) or its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
PAGE = 4096
_ROOT = str(Path(__file__).resolve().parent.parent)
_READY_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1


def blob_bytes(size: int, seed: int) -> bytearray:
    """The blob every agent needs: ``size`` deterministic pseudo-random bytes, built in place
    (``randbytes`` stops below 256 MiB, and joining chunks would hold the blob twice)."""
    rng = random.Random(seed)
    out = bytearray(size)
    for start in range(0, size, MiB):
        n = min(MiB, size - start)
        out[start : start + n] = rng.randbytes(n)
    return out


def page_sample(view: memoryview | bytearray) -> int:
    """Read one byte of every page (so each page is mapped) and return a checksum of them."""
    return sum(memoryview(view)[::PAGE])


def pss_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of ``pid`` in KiB, from ``/proc/PID/smaps_rollup``."""
    pss = rss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def blob_mapping_pss_kib(pid: int) -> int:
    """PSS of ``pid``'s mappings of blob memfds (``/memfd:fabric-blob``), from
    ``/proc/PID/smaps``: the blob alone, without the noise of shared libraries whose PSS moves
    as processes come and go."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = "/memfd:fabric-blob" in line
            elif inside and first == "Pss:":
                total += int(line.split()[1])
    return total


# --- the agent child -----------------------------------------------------------------------


async def _agent(url: str, name: str, mode: str, size: int, seed: int) -> None:
    """``base`` once connected; on ``go [REF]`` takes the blob and prints ``holding CHECKSUM
    MAPPED``; exits when stdin closes."""
    from fabric.shm import SealedMapping
    from sdk import connect

    loop = asyncio.get_running_loop()

    async def line() -> str:
        return str(await loop.run_in_executor(None, sys.stdin.readline))

    async with connect(name, url, default_timeout=30.0) as agent:
        print("base", os.getpid(), flush=True)
        command = (await line()).split()
        if not command:
            return
        held: memoryview | bytearray
        if mode == "private":
            # In a thread: building 256 MiB takes seconds on a busy host, and the node drops
            # a session whose heartbeats stop.
            held = await asyncio.to_thread(blob_bytes, size, seed)
        else:
            held = await agent.state.open_blob(command[1])
        mapped = isinstance(held, memoryview) and isinstance(held.obj, SealedMapping)
        print("holding", page_sample(held), mapped, flush=True)
        await line()  # hold until the parent is done measuring (or gone)


# --- the parent ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Child:
    def __init__(self, process: asyncio.subprocess.Process, label: str) -> None:
        self.process = process
        self.label = label

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str], label: str) -> _Child:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            preexec_fn=_die_with_parent,
        )
        return cls(process, label)

    async def wait_line(self, word: str, timeout: float = _READY_TIMEOUT) -> list[str]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise RuntimeError(f"{self.label} exited before saying {word!r}")
                text = raw.decode()
                parts = text.split()
                # Our agents start the line with the word; the node says "... ready: URL".
                if (parts and parts[0] == word) or (self.label == "node" and word in text):
                    return parts

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10.0):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


@dataclass
class Scenario:
    """One set of agents holding the blob."""

    mode: str
    agents: int
    #: Sum over the agents of PSS before they took the blob / while they hold it (KiB).
    pss_before_kib: int
    pss_holding_kib: int
    #: What the blob costs the agents: the difference (KiB).
    pss_blob_kib: int
    rss_holding_kib: int
    #: The node's PSS while the agents hold the blob, minus before the blob existed (KiB);
    #: it moves with shared libraries too, as agent processes start.
    node_pss_delta_kib: int
    #: PSS of the node's own mapping of the blob (KiB): its share as one more reader.
    node_blob_pss_kib: int
    #: Agents whose view was a mapping of the node's sealed memfd (zero copy).
    mapped: int
    seconds_to_hold: float


async def _scenario(
    mode: str,
    n: int,
    size: int,
    seed: int,
    url: str,
    env: dict[str, str],
    node_pid: int,
    ref: str,
    node_base: int,
    expected: int,
    while_holding: Callable[[], Awaitable[None]] | None = None,
) -> Scenario:
    argv = [sys.executable, "-m", "bench.memory", "--role", "agent", "--url", url]
    argv += ["--mode", mode, "--size-bytes", str(size), "--seed", str(seed)]
    children: list[_Child] = []
    try:
        for i in range(n):
            child = await _Child.start([*argv, "--name", f"mem-{mode}-{i}"], env, f"agent {i}")
            children.append(child)
        for child in children:
            await child.wait_line("base")
        pids = [c.process.pid for c in children]
        before = sum(pss_kib(p)[0] for p in pids)
        started = time.perf_counter()
        for child in children:
            await child.send(f"go {ref}")
        mapped = 0
        for child in children:
            _, checksum, is_mapped = await child.wait_line("holding", timeout=300.0)
            if int(checksum) != expected:
                raise RuntimeError(f"{child.label} holds different bytes")
            mapped += is_mapped == "True"
        elapsed = time.perf_counter() - started
        holding = [pss_kib(p) for p in pids]
        node_after = pss_kib(node_pid)[0]
        after = sum(p for p, _ in holding)
        node_blob = blob_mapping_pss_kib(node_pid)
        if while_holding is not None:
            await while_holding()
        return Scenario(
            mode=mode,
            agents=n,
            pss_before_kib=before,
            pss_holding_kib=after,
            pss_blob_kib=after - before,
            rss_holding_kib=sum(r for _, r in holding),
            node_pss_delta_kib=node_after - node_base,
            node_blob_pss_kib=node_blob,
            mapped=mapped,
            seconds_to_hold=round(elapsed, 3),
        )
    finally:
        await asyncio.gather(*(c.stop() for c in children))


async def _run(size_mib: int, n: int, json_path: Path | None) -> dict[str, Any]:
    from sdk import connect

    size, seed = size_mib * MiB, 1234
    # Built once, before any connection exists: seconds of CPU that would stall heartbeats.
    data = blob_bytes(size, seed)
    expected = page_sample(data)
    with tempfile.TemporaryDirectory(prefix="fabric-bench-memory-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env["PYTHONPATH"] = os.pathsep.join([_ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["XDG_RUNTIME_DIR"] = tmp
        sock = Path(tmp) / "node.sock"
        node = await _Child.start(
            [sys.executable, "-m", "fabric", "node", "--name", "bench-mem", "--socket", str(sock)],
            env,
            "node",
        )
        try:
            await node.wait_line("ready")
            url = f"unix://{sock}"
            pid = node.process.pid
            private = await _scenario(
                "private", n, size, seed, url, env, pid, "-", pss_kib(pid)[0], expected
            )
            async with connect("bench-memory", url, default_timeout=30.0) as sharer:
                node_base = pss_kib(pid)[0]
                ref = await sharer.state.share(data)
                del data
                stats: list[Any] = []

                async def read_stats() -> None:
                    stats.append(await sharer.state.stats())

                shared = await _scenario(
                    "shared", n, size, seed, url, env, pid, ref, node_base, expected, read_stats
                )
        finally:
            await node.stop()
    saving = 1 - shared.pss_blob_kib / private.pss_blob_kib
    # The node holds no copy in (a); in (b) it maps the blob as one more reader.
    host_shared = shared.pss_blob_kib + shared.node_blob_pss_kib
    host_private = private.pss_blob_kib + private.node_blob_pss_kib
    result: dict[str, Any] = {
        "blob_mib": size_mib,
        "agents": n,
        "private": asdict(private),
        "shared": asdict(shared),
        "saving_agents": round(saving, 4),
        "saving_host": round(1 - host_shared / host_private, 4),
        "target": 0.93,
        "node_stats_while_held": {
            "blobs": stats[0].blobs,
            "blob_bytes": stats[0].blob_bytes,
            "shared_saved_bytes": stats[0].shared_saved_bytes,
        },
    }
    if json_path is not None:
        await asyncio.to_thread(json_path.write_text, json.dumps(result, indent=2))
    return result


def _print(r: dict[str, Any]) -> None:
    p, s = r["private"], r["shared"]

    def row(label: str, a: str, b: str) -> None:
        print(f"{label:36}{a:>20}{b:>22}")

    def m(kib: int) -> str:
        return f"{kib / 1024:.1f} MiB"

    print(
        f"{r['agents']} agents on one host, each needing the same {r['blob_mib']} MiB blob "
        "(PSS from /proc/PID/smaps_rollup)"
    )
    row("", "(a) private copies", "(b) one shared blob")
    for label, key in (
        ("agents' PSS before the blob", "pss_before_kib"),
        ("agents' PSS holding the blob", "pss_holding_kib"),
        ("blob cost to the agents (PSS)", "pss_blob_kib"),
        ("node PSS change", "node_pss_delta_kib"),
        ("node's blob mapping (PSS)", "node_blob_pss_kib"),
        ("agents' RSS holding (all touched)", "rss_holding_kib"),
    ):
        row(label, m(p[key]), m(s[key]))
    row("agents mapping the node's memfd", str(p["mapped"]), str(s["mapped"]))
    row("time until all hold it", f"{p['seconds_to_hold']:.2f} s", f"{s['seconds_to_hold']:.2f} s")
    ok = "meets" if r["saving_agents"] >= r["target"] else "MISSES"
    print(
        f"saved: {r['saving_agents']:.2%} of the agents' PSS ({ok} the >= 93% target); "
        f"{r['saving_host']:.2%} on the host (node included)"
    )
    st = r["node_stats_while_held"]
    print(
        f"node $state.stats while held: blobs={st['blobs']} blob_bytes={st['blob_bytes']} "
        f"shared_saved_bytes={st['shared_saved_bytes']}"
    )


def main(argv: list[str] | None = None) -> int:
    doc = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=doc)
    parser.add_argument("--size-mib", type=int, default=256, help="blob size (default 256)")
    parser.add_argument("--agents", type=int, default=16, help="agent processes (default 16)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    # Internal: the agent children.
    parser.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--size-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "agent":
        asyncio.run(_agent(args.url, args.name, args.mode, args.size_bytes, args.seed))
        return 0
    if not (1 <= args.size_mib <= 512 and 1 <= args.agents <= 64):
        parser.error("--size-mib must be 1..512 (the blob limit) and --agents 1..64")

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.timeout):
            return await _run(args.size_mib, args.agents, args.json)

    _print(asyncio.run(bounded()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where each microsecond goes: one message path run N times, for strace and py-spy.

``python -m bench.hops run PATH --count N [--size B]`` starts what the path needs (nodes and a
worker agent, as ``fabric bench`` starts them), sends N messages and prints one line of JSON:
the mean wall time per message and each process's CPU time per message (user + system, from
``/proc``, which depends far less on the machine's load than the latency does). The paths:

- ``node``: request/reply through the node (the requester connects with ``direct=False``);
- ``direct``: request/reply straight to the responder's own socket (the SDK default);
- ``twonode``: request/reply with the responder on a second node, linked over TCP loopback;
- ``publish``: one-way publishes to a subscriber process (counted, then confirmed);
- ``floor-unix`` / ``floor-tcp``: the socket ping-pong of the floor rows (``bench.floor``).

``python -m bench.hops strace PATH`` runs ``run`` twice under ``strace -ff`` (``--count`` and
twice it) and prints system calls *per message* for each process role: the difference of the
two runs divided by the extra messages, so start-up and shutdown cancel out and the numbers do
not depend on the machine's load. ``python -m bench.hops pyspy PATH`` records the run with
``py-spy --subprocesses`` and prints each role's top functions by own time and the share of
samples spent in them (on a loaded machine, a process waiting for a CPU is sampled as busy, so
these shares lean towards wherever it wakes up). ``python -m bench.hops cprofile PATH`` runs
every process under cProfile twice, like ``strace``, and prints the Python function calls per
message of each role: a count no load changes, with cProfile's own time per function.
docs/bench.md ("Where each microsecond goes") has a run of each.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._procs import PROFILE_DIR_ENV

__all__ = ["PATHS", "calls_per_message", "fold_raw", "main", "per_message", "role_of"]

PATHS: tuple[str, ...] = ("node", "direct", "twonode", "publish", "floor-unix", "floor-tcp")
_OP_TIMEOUT_S = 30.0
#: A whole counted loop is bounded in time as well as in count; past this it fails.
_RUN_LIMIT_S = 600.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, all its threads (0 if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """CPU time each process of a run spends between ``start`` and ``stop``: unlike the
    latency, it hardly depends on how loaded the machine is."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {role: _cpu_seconds(pid) for role, pid in self._pids.items()}

    def stop(self) -> None:
        self.used = {
            role: _cpu_seconds(pid) - self._start[role] for role, pid in self._pids.items()
        }

    def per_message_us(self, count: int) -> dict[str, float]:
        return {role: round(used / count * 1e6, 1) for role, used in self.used.items()}


def _pids(system: Any, children: Sequence[Any]) -> dict[str, int]:
    pids = {"client": os.getpid()}
    nodes = getattr(system, "_nodes", None) or [getattr(system, "_node", None)]
    for i, node in enumerate(n for n in nodes if n is not None):
        pids[f"node{i}"] = node.proc.pid
    for i, child in enumerate(children):
        pids[f"responder{i}" if i else "responder"] = child.proc.pid
    return pids


async def _run_fabric(path: str, count: int, size: int, workdir: Path) -> dict[str, Any]:
    from bench._plan import plan_layout
    from bench._runner import _start_workers
    from bench.systems._fabric import FabricCrossNodeSystem, FabricSystem
    from sdk import connect

    system = FabricCrossNodeSystem() if path == "twonode" else FabricSystem()
    env = await system.start_env(workdir)
    layout = plan_layout(("sink",) if path == "publish" else ("echo",))
    children: list[Any] = []
    try:
        children, _ = await _start_workers(system, layout, env)
        async with connect("hops-client", url=env["url"], direct=path != "node") as agent:
            payload = b"x" * size
            # Every role subscribed and routed before the counted part starts.
            deadline = time.monotonic() + 20.0
            while True:
                replies = await agent.gather("bench.ping", b"", deadline=5.0)
                if len(replies) >= 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            meter = _CpuMeter(_pids(system, children))
            if path == "publish":
                meter.start()
                start = time.perf_counter()
                for _ in range(count):
                    await agent.publish("bench.tp", payload)
                await agent.flush()
                reply = await agent.request(
                    "bench.tp.end", str(count).encode(), timeout=_OP_TIMEOUT_S
                )
                seconds = time.perf_counter() - start
                meter.stop()
                delivered = int(bytes(reply.data))
            else:
                for _ in range(50):  # warm the directory and the links, not counted twice
                    await agent.request("bench.echo", payload, timeout=_OP_TIMEOUT_S)
                meter.start()
                start = time.perf_counter()
                for _ in range(count):
                    await agent.request("bench.echo", payload, timeout=_OP_TIMEOUT_S)
                seconds = time.perf_counter() - start
                meter.stop()
                delivered = count
    finally:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(system.stop_env(), 15)
    return {
        "delivered": delivered,
        "seconds": seconds,
        "cpu_us_per_message": meter.per_message_us(count),
    }


async def _run_floor(path: str, count: int, size: int, workdir: Path) -> dict[str, Any]:
    from bench.systems._floor import FloorTcpSystem, FloorUnixSystem

    system = FloorTcpSystem() if path == "floor-tcp" else FloorUnixSystem()
    env = await system.start_env(workdir)
    assert system._echo is not None
    meter = _CpuMeter({"client": os.getpid(), "echo": system._echo.proc.pid})
    try:
        client = await system.open_client(env, [], [])
        payload = b"x" * size

        def loop() -> float:
            for _ in range(50):
                client.request(payload)
            meter.start()
            start = time.perf_counter()
            for _ in range(count):
                client.request(payload)
            seconds = time.perf_counter() - start
            meter.stop()
            return seconds

        seconds = await asyncio.to_thread(loop)
        await client.aclose()
    finally:
        await system.stop_env()
    return {
        "delivered": count,
        "seconds": seconds,
        "cpu_us_per_message": meter.per_message_us(count),
    }


def _run(path: str, count: int, size: int) -> int:
    import uvloop

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="fabric-hops-") as tmp:
            run = _run_floor if path.startswith("floor") else _run_fabric
            return await run(path, count, size, Path(tmp))

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(_RUN_LIMIT_S):
            return await go()

    folder = os.environ.get(PROFILE_DIR_ENV)
    if folder:
        import cProfile

        with cProfile.Profile() as profile:
            result = uvloop.run(bounded())
        profile.dump_stats(os.path.join(folder, "client.prof"))
    else:
        result = uvloop.run(bounded())
    result |= {
        "path": path,
        "count": count,
        "size": size,
        "us_per_message": result["seconds"] / count * 1e6,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result), flush=True)
    return 0


# --- strace ---------------------------------------------------------------------------------

_CLONE = re.compile(r"^(?:clone3?|vfork|fork)\((.*)\)\s+=\s+(\d+)")
_EXECVE = re.compile(r'^execve\("[^"]*", \[(.*?)\]')
_CALL = re.compile(r"^(?:<\.\.\. )?([a-z_0-9]+)[( ]")


def role_of(argv: str) -> str | None:
    """The role of a process in a hops run, from its execve argv (None: not one of ours)."""
    if "fabric" in argv and '"node"' in argv:
        name = re.search(r'"--name", "([^"]+)"', argv)
        return f"node {name.group(1)}" if name else "node"
    if "bench.worker" in argv:
        return "responder"
    if "bench.floor" in argv:
        return "echo"
    if "bench.hops" in argv:
        return "client"
    return None


def _strace_counts(directory: Path) -> dict[str, collections.Counter[str]]:
    """System calls by role in the ``strace -ff -o directory/t`` output of one run."""
    files = {int(p.name.rsplit(".", 1)[1]): p for p in directory.glob("t.*")}
    owner: dict[int, int] = {}  # thread id -> process id
    role: dict[int, str | None] = {}
    calls: dict[int, collections.Counter[str]] = {}
    for tid in sorted(files):
        counter: collections.Counter[str] = collections.Counter()
        for line in files[tid].read_text(errors="replace").splitlines():
            if line.startswith("+++") or line.startswith("---"):
                continue
            if line.startswith("<... "):
                continue  # the second half of an interrupted call, counted at its start
            clone = _CLONE.match(line)
            if clone:
                child = int(clone.group(2))
                owner[child] = owner.get(tid, tid) if "CLONE_THREAD" in clone.group(1) else child
            execve = _EXECVE.match(line)
            if execve:
                role[owner.get(tid, tid)] = role_of(execve.group(1))
            call = _CALL.match(line)
            if call:
                counter[call.group(1)] += 1
        calls[tid] = counter
    by_role: dict[str, collections.Counter[str]] = {}
    for tid, counter in calls.items():
        name = role.get(owner.get(tid, tid))
        if name is not None:
            by_role.setdefault(name, collections.Counter()).update(counter)
    return by_role


def per_message(
    small: dict[str, collections.Counter[str]],
    large: dict[str, collections.Counter[str]],
    extra: int,
) -> dict[str, dict[str, float]]:
    """System calls per message of each role: (large run - small run) / extra messages."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(small) | set(large)):
        a, b = small.get(name, collections.Counter()), large.get(name, collections.Counter())
        row = {call: (b[call] - a[call]) / extra for call in set(a) | set(b)}
        out[name] = {k: v for k, v in sorted(row.items(), key=lambda kv: -kv[1]) if v > 0}
    return out


def _strace(path: str, count: int, size: int) -> int:
    if shutil.which("strace") is None:
        print("strace is not installed", file=sys.stderr)
        return 1
    runs = []
    with tempfile.TemporaryDirectory(prefix="fabric-hops-strace-") as tmp:
        for n in (count, 2 * count):
            directory = Path(tmp) / str(n)
            directory.mkdir()
            argv = [sys.executable, "-m", "bench.hops", "run", path, "--count", str(n)]
            argv += ["--size", str(size)]
            done = subprocess.run(
                ["strace", "-ff", "-qq", "-o", str(directory / "t"), *argv],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                return 1
            runs.append(_strace_counts(directory))
    table = per_message(runs[0], runs[1], count)
    print(json.dumps({"path": path, "size": size, "syscalls_per_message": table}, indent=1))
    for name, row in table.items():
        top = ", ".join(f"{k} {v:.3g}" for k, v in list(row.items())[:8])
        print(f"{name:>12}: {sum(row.values()):7.3f} per message  ({top})")
    return 0


# --- cProfile -------------------------------------------------------------------------------

#: (file, line, function) -> (primitive calls, calls, own seconds, cumulative seconds, callers)
Stats = dict[tuple[str, int, str], tuple[Any, ...]]


def _prof_role(filename: str) -> str:
    stem = filename.removesuffix(".prof")
    if stem.startswith("fabric-node"):
        return "node" + stem.removeprefix("fabric-node").replace("-", "")
    if "worker" in stem:
        return "responder"
    if "echo" in stem:
        return "echo"
    return stem


def calls_per_message(small: Stats, large: Stats, extra: int, *, top: int = 12) -> dict[str, Any]:
    """Python function calls per message from two cProfile runs of one process (``extra``
    more messages in ``large``): the total, and the functions called most, each with its calls
    and its own time per message. Call counts do not depend on the machine's load; the times
    do (and cProfile roughly doubles them)."""
    rows = []
    for key, value in large.items():
        before = small.get(key)
        calls = (value[1] - (before[1] if before else 0)) / extra
        own_us = (value[2] - (before[2] if before else 0)) / extra * 1e6
        if calls > 0:
            filename, line, function = key
            where = f"{function} ({Path(filename).name}:{line})" if line else function
            rows.append((where, calls, own_us))
    rows.sort(key=lambda r: -r[2])
    return {
        "calls": round(sum(r[1] for r in rows), 1),
        "own_us": round(sum(r[2] for r in rows), 1),
        "top": [(w, round(c, 2), round(t, 2)) for w, c, t in rows[:top]],
    }


def _load_stats(folder: Path) -> dict[str, Stats]:
    import pstats

    found: dict[str, Stats] = {}
    for prof in sorted(folder.glob("*.prof")):
        found[_prof_role(prof.name)] = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    return found


def _cprofile(path: str, count: int, size: int) -> int:
    runs = []
    with tempfile.TemporaryDirectory(prefix="fabric-hops-cprofile-") as tmp:
        for n in (count, 2 * count):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            argv = [sys.executable, "-m", "bench.hops", "run", path, "--count", str(n)]
            argv += ["--size", str(size)]
            done = subprocess.run(
                argv,
                env={**os.environ, PROFILE_DIR_ENV: str(folder)},
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                return 1
            runs.append(_load_stats(folder))
    table = {
        role: calls_per_message(runs[0].get(role, {}), runs[1][role], count)
        for role in sorted(runs[1])
    }
    print(json.dumps({"path": path, "size": size, "python_per_message": table}, indent=1))
    for role, row in table.items():
        print(f"== {role}: {row['calls']} calls, {row['own_us']} µs own time per message")
        for where, calls, own_us in row["top"]:
            print(f"  {own_us:7.2f} µs  {calls:5.2f} calls  {where}")
    return 0


# --- py-spy ---------------------------------------------------------------------------------


def _short(frame: str) -> str:
    return re.sub(r" \(([^)]*/)?([^/)]+)\)$", r" (\2)", frame)


def fold_raw(
    text: str, *, top: int = 12, inclusive: bool = False
) -> dict[str, list[tuple[str, float]]]:
    """py-spy's ``--format raw`` output (one folded stack and its sample count per line, the
    processes as frames with ``--subprocesses``): each role's top functions by own time (or
    by time including callees), as shares of that role's samples. Idle samples are not
    recorded, and only samples inside a running event loop count (start-up imports do not).
    """
    own: dict[str, collections.Counter[str]] = {}
    totals: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        # With --subprocesses each process is a frame under its parent's: the last one is
        # the process the sample is from.
        procs = [i for i, f in enumerate(frames) if f.startswith("process ")]
        if not procs or procs[-1] == len(frames) - 1:
            continue
        cmdline = frames[procs[-1]].partition(":")[2].strip('"')
        name = role_of(", ".join(f'"{word}"' for word in cmdline.split())) or cmdline[:40]
        stack_frames = [_short(f) for f in frames[procs[-1] + 1 :]]
        if not any(f.startswith(("Runner.run ", "run (")) for f in stack_frames) or any(
            "<frozen importlib" in f for f in stack_frames
        ):
            continue
        counter = own.setdefault(name, collections.Counter())
        totals[name] = totals.get(name, 0) + int(n)
        if inclusive:
            for frame in set(stack_frames):
                counter[frame] += int(n)
        else:
            counter[stack_frames[-1]] += int(n)
    out: dict[str, list[tuple[str, float]]] = {}
    for name, counter in own.items():
        # Frames on every sample (the interpreter's entry, the loop's run) say nothing.
        shares = [(f, c / totals[name]) for f, c in counter.most_common()]
        out[name] = [(f, share) for f, share in shares if share < 0.99 or not inclusive][:top]
    return out


def _pyspy(path: str, count: int, size: int) -> int:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="fabric-hops-pyspy-") as tmp:
        out = Path(tmp) / "raw.txt"
        argv = [sys.executable, "-m", "bench.hops", "run", path, "--count", str(count)]
        argv += ["--size", str(size)]
        done = subprocess.run(
            [spy, "record", "--subprocesses", "--rate", "1000", "--format", "raw",
             "-o", str(out), "--", *argv],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0 or not out.exists():
            print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
            return 1
        print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
        raw = out.read_text()
        for inclusive in (False, True):
            print("own time" if not inclusive else "including callees")
            for name, rows in sorted(fold_raw(raw, top=14, inclusive=inclusive).items()):
                print(f"== {name}")
                for frame, share in rows:
                    print(f"  {share:6.1%}  {frame}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``run``, ``strace`` or ``pyspy`` one path; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.hops")
    parser.add_argument("action", choices=("run", "strace", "cprofile", "pyspy"))
    parser.add_argument("path", choices=PATHS)
    parser.add_argument("--count", type=int, default=0, help="messages (default per action)")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    count = max(1, min(args.count, 1_000_000))
    if args.action == "run":
        return _run(args.path, count if args.count else 2000, args.size)
    if args.action == "strace":
        return _strace(args.path, count if args.count else 500, args.size)
    if args.action == "cprofile":
        return _cprofile(args.path, count if args.count else 2000, args.size)
    return _pyspy(args.path, count if args.count else 5000, args.size)


if __name__ == "__main__":
    sys.exit(main())

"""``fabric up``: a local mesh of node subprocesses on loopback, for trying things out.

``plan_local_mesh`` is pure (names, sites, ports, TOML text); ``run_local_mesh`` starts one
``fabric node`` per plan entry, waits for each ready line, prints how to connect, and stops
them all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._keeper import Keeper, describe_exit

__all__ = [
    "LocalNode",
    "clean_runtime",
    "plan_local_mesh",
    "prepare_local_mesh",
    "run_local_mesh",
]

_READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class LocalNode:
    name: str
    site: str
    socket: Path
    cluster: str | None
    config: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plan_local_mesh(
    cloud: int, edge: int, runtime: Path, ports: list[int] | None = None
) -> list[LocalNode]:
    """Cloud nodes c1..cN in a full mesh; edge node e_i attaches to two cloud nodes in turn.

    Raises:
        ConfigError: no cloud node, or negative counts.
    """
    if cloud < 1 or edge < 0:
        raise ConfigError("a mesh needs at least one cloud node")
    ports = ports or [_free_port() for _ in range(cloud)]
    cluster = {f"c{i + 1}": f"tcp://127.0.0.1:{ports[i]}" for i in range(cloud)}
    nodes = []
    for name, url in cluster.items():
        seeds = [u for n, u in cluster.items() if n != name]
        toml = f'site = "cloud"\ncluster = "{url}"\nseeds = {json.dumps(seeds)}\n'
        nodes.append(LocalNode(name, "cloud", runtime / f"{name}.sock", url, toml))
    urls = list(cluster.values())
    for i in range(edge):
        hubs = [urls[i % cloud], urls[(i + 1) % cloud]] if cloud > 1 else urls
        site = f"edge-{i + 1}"
        toml = f'site = "{site}"\nleaf_of = {json.dumps(hubs)}\n'
        nodes.append(LocalNode(f"e{i + 1}", site, runtime / f"e{i + 1}.sock", None, toml))
    return nodes


def prepare_local_mesh(cloud: int, edge: int, runtime: Path) -> list[LocalNode]:
    """Plan the mesh and write each node's config into ``runtime``.

    Raises:
        ConfigError: bad counts; the directory cannot be written.
    """
    plan = plan_local_mesh(cloud, edge, runtime)
    try:
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        for node in plan:
            (runtime / f"{node.name}.toml").write_text(node.config)
    except OSError as exc:
        raise ConfigError(f"cannot prepare {runtime}: {exc}") from None
    return plan


def clean_runtime(plan: list[LocalNode], runtime: Path, *, created: bool) -> None:
    """Remove what the mesh left in ``runtime`` once its nodes stopped: the configs written
    here and any socket a killed node could not remove; the directory too when ``fabric up``
    created it (a ``--runtime`` given by the user stays, emptied of our files only)."""
    for node in plan:
        for path in (
            runtime / f"{node.name}.toml",
            node.socket,
            node.socket.with_name(node.socket.name + ".pool"),
            node.socket.with_name(node.socket.name + ".lock"),
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if created:
        shutil.rmtree(runtime, ignore_errors=True)


async def _start(node: LocalNode, runtime: Path) -> asyncio.subprocess.Process:
    config = runtime / f"{node.name}.toml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabric",
        "node",
        "--name",
        node.name,
        "--socket",
        str(node.socket),
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    raise ConfigError(f"node {node.name} exited before it was ready")
                if b"ready" in line:
                    break
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    # Keep reading what it prints: a full pipe would block the node.
    drain = asyncio.ensure_future(_drain(proc.stdout))
    _DRAINS.add(drain)
    drain.add_done_callback(_DRAINS.discard)
    return proc


_DRAINS: set[asyncio.Future[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def run_local_mesh(
    plan: list[LocalNode],
    runtime: Path,
    say: Callable[[str], None],
    *,
    keeper: Keeper | None = None,
) -> None:
    """Start the planned nodes, print how to reach them, and run until SIGINT/SIGTERM.

    A node that exits meanwhile is reported in one line; the others keep running, and the
    ``keeper`` decides whether and when it is started again (``_keeper.py``: by default after
    a backoff of 0.5 s doubling to 30 s).

    Raises:
        ConfigError: a node that would not start.
    """
    keeper = keeper or Keeper()
    cloud = sum(1 for n in plan if n.cluster)
    edge = len(plan) - cloud
    procs: dict[str, asyncio.subprocess.Process] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        clouds = [n for n in plan if n.cluster]
        started = await asyncio.gather(*(_start(n, runtime) for n in clouds))
        for n, p in zip(clouds, started, strict=True):
            procs[n.name] = p
        edges = [n for n in plan if not n.cluster]
        started = await asyncio.gather(*(_start(n, runtime) for n in edges))
        for n, p in zip(edges, started, strict=True):
            procs[n.name] = p
        say(f"mesh up: {cloud} cloud + {edge} edge nodes (runtime dir {runtime})")
        for n in plan:
            where = f" cluster {n.cluster}" if n.cluster else ""
            say(f"  {n.name:4} site={n.site:8} FABRIC_URL={n.url}{where}")
        first = plan[0].url
        say(f"connect an agent:  FABRIC_URL={first} python your_agent.py")
        say(f"inspect the mesh:  fabric mesh --url {first}")
        say("Ctrl-C stops every node.")
        await _keep(plan, runtime, procs, keeper, stop, say)
    finally:
        for p in procs.values():
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in procs.values():
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        say("mesh stopped")


async def _keep(
    plan: list[LocalNode],
    runtime: Path,
    procs: dict[str, asyncio.subprocess.Process],
    keeper: Keeper,
    stop: asyncio.Event,
    say: Callable[[str], None],
) -> None:
    """Watch the nodes until ``stop``: report each exit, restart as ``keeper`` says."""
    by_name = {n.name: n for n in plan}
    loop = asyncio.get_running_loop()
    started = {name: loop.time() for name in procs}
    watching: dict[asyncio.Future[Any], str] = {}

    def watch(name: str) -> None:
        watching[asyncio.ensure_future(procs[name].wait())] = name

    async def restart_later(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return name

    for name in procs:
        watch(name)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            done, _ = await asyncio.wait(
                [stopper, *watching], return_when=asyncio.FIRST_COMPLETED
            )
            for fut in done:
                if fut is stopper:
                    continue
                name = watching.pop(fut)
                if isinstance(fut.result(), str):  # the restart delay is over
                    try:
                        procs[name] = await _start(by_name[name], runtime)
                    except (ConfigError, TimeoutError) as exc:
                        delay = keeper.exited(name, up_for=0.0)
                        say(f"node {name} did not start again: {exc}")
                        if delay is not None:
                            watching[asyncio.ensure_future(restart_later(name, delay))] = name
                        continue
                    started[name] = loop.time()
                    say(f"node {name} restarted (restart {keeper.restarts(name)})")
                    watch(name)
                    continue
                if stop.is_set():
                    continue
                delay = keeper.exited(name, up_for=loop.time() - started[name])
                how = describe_exit(procs[name].returncode or 0)
                if delay is None:
                    say(f"node {name} exited ({how}); the others keep running; not restarting")
                else:
                    say(
                        f"node {name} exited ({how}); the others keep running; "
                        f"restarting in {delay:.1f} s"
                    )
                    watching[asyncio.ensure_future(restart_later(name, delay))] = name
    finally:
        stopper.cancel()
        for fut in watching:
            fut.cancel()

"""``fabric top``: a live view of one node or of several (a mesh), refreshed in place.

Rates come from successive ``$node.stats`` snapshots (fabric/_top_model.py does the math);
hop latency p50/p99 appears when the node runs with ``--metrics``. Quit with ``q`` or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ._top_model import TopModel

__all__ = ["render", "run_top"]


def _fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(model: TopModel, interval: float) -> Group:
    """The screen: a node table, a peer table and a help line."""
    nodes = Table(title="nodes", expand=True)
    for column in ("node", "site", "sessions", "subs", "msgs in/s", "msgs out/s", "MB in/s",
                   "req/s", "no-resp/s", "slow", "hop p50 µs", "hop p99 µs", "pool", "leases"):
        nodes.add_column(column, justify="left" if column in ("node", "site") else "right")
    for row in model.nodes.values():
        if row.error:
            nodes.add_row(row.node, "[red]unreachable[/red]", *[""] * 11, Text(row.error[:40]))
            continue
        nodes.add_row(
            row.node,
            row.site,
            str(row.sessions),
            str(row.subscriptions),
            _fmt_rate(row.rates["messages_in"]),
            _fmt_rate(row.rates["messages_out"]),
            f"{row.rates['bytes_in'] / 1e6:.2f}",
            _fmt_rate(row.rates["requests"]),
            _fmt_rate(row.rates["no_responders"]),
            f"[red]{row.slow_consumers}[/red]" if row.slow_consumers else "0",
            _fmt_us(row.hop_p50_us),
            _fmt_us(row.hop_p99_us),
            "-" if row.pool_used is None else f"{row.pool_used * 100:.1f}%",
            "-" if row.pool_leases is None else str(row.pool_leases),
        )
    peers = Table(title="peers", expand=True)
    for column in ("node", "peer", "kind", "site", "link", "rtt ms", "fwd/s"):
        peers.add_column(column)
    for rows in model.peers.values():
        for p in rows:
            state = p.state if p.state == "up" else f"[red]{p.state}[/red]"
            rtt = "-" if p.rtt_ms is None else f"{p.rtt_ms:.2f}"
            peers.add_row(p.node, p.peer, p.kind, p.site, state, rtt, _fmt_rate(p.forwarded_rate))
    help_line = Text(
        f"fabric top · every {interval:g}s · {time.strftime('%H:%M:%S')} · q or Ctrl-C to quit",
        style="dim",
    )
    return Group(nodes, peers, help_line)


@contextlib.contextmanager
def _keys(stop: asyncio.Event) -> Iterator[None]:
    """Read single keys from a terminal stdin (cbreak mode); ``q`` sets ``stop``."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        try:
            data = os.read(fd, 32)
        except OSError:
            data = b""
        if not data or b"q" in data.lower() or b"\x03" in data:
            stop.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _snapshot(agent: Any, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return dict(await agent.node_status())


async def _discover(
    model: TopModel, seen: dict[str, dict[str, Any]], now: float, timeout: float
) -> set[str]:
    """Poll every node reachable through peers' ``metrics`` labels; their row keys."""
    from .metrics._discover import crawl

    found, failed = await crawl(seen, timeout)
    for name, snap in found.items():
        model.update(name, snap, now)
    for name, reason in failed.items():
        model.failed(name, reason)
    return set(found) | set(failed)


async def run_top(
    urls: list[str | None], interval: float, once: bool = False, mesh: bool = False
) -> None:
    """Refresh until ``q``/Ctrl-C (or after two snapshots with ``once``). With ``mesh``,
    also every node reachable through peers' ``metrics`` labels (nodes that serve
    ``--metrics`` on a concrete address announce it to their peers).

    Raises:
        ConnectionLost: no node in ``urls`` could be reached at start.
    """
    from rich.console import Console
    from rich.live import Live

    from sdk import connect

    from .errors import FabricError

    console = Console()
    model = TopModel()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        agents = [
            await stack.enter_async_context(connect("fabric-top", url, reconnect=True))
            for url in urls
        ]
        keys = [str(u) for u in urls]

        async def poll() -> None:
            now = time.monotonic()
            results = await asyncio.gather(
                *(_snapshot(a, max(interval, 1.0)) for a in agents), return_exceptions=True
            )
            seen: dict[str, dict[str, Any]] = {}
            for key, result in zip(keys, results, strict=True):
                if isinstance(result, dict):
                    model.update(key, result, now)
                    seen[str(result.get("node"))] = result
                elif isinstance(result, FabricError | TimeoutError):
                    model.failed(key, f"{type(result).__name__}: {result}")
                else:
                    raise result
            if mesh:
                found = await _discover(model, seen, now, max(interval, 1.0))
                model.forget_others(set(keys) | found)

        await poll()
        if once:
            await asyncio.sleep(interval)
            await poll()
            console.print(render(model, interval))
            return
        with _keys(stop), Live(render(model, interval), console=console, screen=False,
                               auto_refresh=False) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                if stop.is_set():
                    break
                await poll()
                live.update(render(model, interval), refresh=True)

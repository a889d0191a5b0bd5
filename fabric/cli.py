"""The ``fabric`` command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from ._help import hide_flag_types
from .errors import FabricError
from .protocol import INBOX_PREFIX

__all__ = ["app", "main"]

hide_flag_types()
app = typer.Typer(
    help="Agent Fabric: a message fabric for AI agent swarms.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"agent-fabric {version('agent-fabric')}")
        except PackageNotFoundError:
            print("agent-fabric (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Agent Fabric: a message fabric for AI agent swarms."""


@app.command()
def node(
    config: Annotated[
        Path | None, typer.Option(help="TOML file with node settings.", exists=True)
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name (default: host name).")] = None,
    site: Annotated[str | None, typer.Option(help="Site label (default: local).")] = None,
    socket: Annotated[Path | None, typer.Option(help="Unix socket for local agents.")] = None,
    listen: Annotated[
        str | None, typer.Option(help="ZeroMQ endpoint for remote agents, tcp://HOST:PORT.")
    ] = None,
    max_payload: Annotated[int | None, typer.Option(help="Largest payload, bytes.")] = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option(help="Seconds between liveness checks.")
    ] = None,
    tracing: Annotated[str | None, typer.Option(help="off, console or otlp.")] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help="HOST:PORT serving /metrics (Prometheus) and monitoring JSON."),
    ] = None,
) -> None:
    """Run a broker node in the foreground (stop with Ctrl-C or SIGTERM).

    Settings come from these flags, then FABRIC_* environment variables, then --config.
    """
    from .config import load_settings
    from .runner import run_node

    try:
        settings = load_settings(
            config,
            name=name,
            site=site,
            socket=socket,
            listen=listen,
            max_payload=max_payload,
            heartbeat_interval=heartbeat_interval,
            tracing=tracing,
            metrics=metrics,
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        run_node(settings)
    except FabricError as exc:
        err_console.print(f"[red]node failed:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    url: Annotated[
        str | None, typer.Option(help="Node URL (default: FABRIC_URL or the local node).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False,
) -> None:
    """Show a node's sessions, subscriptions and counters."""
    snapshot = _status_or_exit(url)
    if as_json:
        console.print_json(json.dumps(snapshot))
        return
    _print_status(snapshot)


def _status_or_exit(url: str | None) -> dict[str, Any]:
    """A node's status snapshot, or exit 1 with a clear message when it is unreachable."""
    from .runner import install_uvloop

    install_uvloop()
    try:
        return asyncio.run(_fetch_status(url))
    except FabricError as exc:
        err_console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None


async def _fetch_status(url: str | None) -> dict[str, Any]:
    from sdk import connect

    async with connect("fabric-cli", url, reconnect=False) as agent:
        return await agent.node_status()


def _print_status(snapshot: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(
        f"[bold]{snapshot['node']}[/bold] site={snapshot['site']} "
        f"endpoints={' '.join(snapshot['endpoints'])}"
    )
    stats = Table("counter", "value", title="counters")
    for key, value in snapshot["stats"].items():
        stats.add_row(key, str(value))
    console.print(stats)
    sessions = Table("id", "agent", "peer", "subscriptions", "dropped", title="sessions")
    for s in snapshot["sessions"]:
        subs = ", ".join(
            x["subject"] + (f" [{x['queue']}]" if x["queue"] else "")
            for x in s["subscriptions"]
            if not x["subject"].startswith(INBOX_PREFIX)
        )
        sessions.add_row(str(s["id"]), s["name"], s["peer"], subs, str(s["dropped"]))
    console.print(sessions)
    _print_pool_and_mesh(snapshot)


def _print_pool_and_mesh(snapshot: dict[str, Any]) -> None:
    """The shared-memory pool and the mesh links, as tables (``fabric status``)."""
    from rich.table import Table

    pool = snapshot.get("pool")
    if pool:
        used = pool["bytes_in_use"] / pool["pool_bytes"] * 100 if pool["pool_bytes"] else 0.0
        table = Table("pool", "value", title="shared-memory pool")
        table.add_row("size", f"{pool['pool_bytes'] / 2**20:.0f} MiB")
        table.add_row("in use", f"{pool['bytes_in_use'] / 2**20:.1f} MiB ({used:.1f}%)")
        for key in ("allocated", "leases", "reclaimed", "refused", "too_large"):
            table.add_row(key.replace("_", " "), str(pool.get(key, 0)))
        console.print(table)
    else:
        console.print("shared-memory pool: off")
    mesh = snapshot.get("mesh")
    if not mesh:
        console.print("mesh: not part of a mesh")
        return
    peers = Table("peer", "kind", "site", "link", "rtt ms", "forwarded",
                  title=f"mesh (role {mesh['role']}, cluster {mesh['cluster'] or '-'})")
    for p in mesh["peers"]:
        peers.add_row(p["name"], p["kind"], p["site"], p.get("state", "up"),
                      "-" if p["rtt_ms"] is None else str(p["rtt_ms"]), str(p.get("forwarded", 0)))
    console.print(peers)
    console.print(" ".join(f"{k}={v}" for k, v in mesh["stats"].items()))


@app.command()
def demo(
    url: Annotated[
        str | None,
        typer.Option(help="Use this node instead of starting an embedded one."),
    ] = None,
) -> None:
    """Start an embedded node and a few agents, and show every messaging pattern working."""
    from .demo import run_demo

    try:
        run_demo(url)
    except FabricError as exc:
        err_console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def gateway(
    url: Annotated[
        str | None, typer.Option(help="Node URL (default: FABRIC_URL or the local node).")
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to serve HTTP on (default 127.0.0.1:8080).")
    ] = None,
    auth_file: Annotated[
        Path | None, typer.Option(help="The node's TOML permissions file.", exists=True)
    ] = None,
    max_body: Annotated[int | None, typer.Option(help="Largest request body, bytes.")] = None,
    webrtc: Annotated[
        bool | None, typer.Option(help="Serve WebRTC signaling at /v1/webrtc/offer.")
    ] = None,
) -> None:
    """Serve the HTTP + WebSocket gateway (and WebRTC signaling) in front of a node.

    Settings come from these flags, then FABRIC_GATEWAY_* environment variables.
    """
    try:
        from gateways import GatewaySettings, run_gateway
    except ImportError as exc:
        err_console.print(
            f"[red]fabric gateway needs the gateway extra[/red] ({exc}): "
            "pip install 'agent-fabric\\[gateway]'"
        )
        raise typer.Exit(2) from None
    given: dict[str, Any] = {
        "url": url,
        "listen": listen,
        "auth_file": auth_file,
        "max_body": max_body,
        "webrtc": webrtc,
    }
    try:
        settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err_console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        run_gateway(settings)
    except FabricError as exc:
        err_console.print(f"[red]gateway failed:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None


@app.command(name="mcp")
def mcp_stdio(
    url: Annotated[
        str | None, typer.Option(help="Node URL (default: FABRIC_URL or the local node).")
    ] = None,
    name: Annotated[str, typer.Option(help="Agent name the MCP server joins as.")] = "mcp-stdio",
    timeout: Annotated[float, typer.Option(help="Seconds a tool call may take.")] = 30.0,
) -> None:
    """Serve the fabric's MCP tools over stdio (for desktop MCP clients; docs/interop.md)."""
    try:
        from sdk.mcp import run_stdio
    except ImportError as exc:
        err_console.print(
            f"[red]fabric mcp needs the agents extra[/red] ({exc}): "
            "pip install 'agent-fabric\\[agents]'"
        )
        raise typer.Exit(2) from None
    try:
        run_stdio(url, name, timeout)
    except FabricError as exc:
        err_console.print(f"[red]fabric mcp failed:[/red] {exc}")
        raise typer.Exit(1) from None


keys_app = typer.Typer(help="CurveZMQ keys for node-to-node links.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "node",
    directory: Annotated[Path, typer.Option("--dir", help="Where to write them.")] = Path(
        "keys"
    ),
) -> None:
    """Write NAME.key (public, give it to peers) and NAME.key_secret (keep it, mode 0600)."""
    from .auth import generate_keypair, load_keypair

    try:
        public, secret = generate_keypair(directory, name)
        pub, _ = load_keypair(secret)
    except FabricError as exc:
        err_console.print(f"[red]cannot generate keys:[/red] {exc}")
        raise typer.Exit(1) from None
    # Z85 keys may hold "[...]", which rich would read as markup; long paths must not wrap.
    console.print(f"public key  {public}  ({pub.decode()})", markup=False, soft_wrap=True)
    console.print(
        f"secret key  {secret}  (curve_key = \"{secret}\")", markup=False, soft_wrap=True
    )


@app.command()
def up(
    cloud: Annotated[int, typer.Option(help="Cloud nodes in the cluster.")] = 3,
    edge: Annotated[int, typer.Option(help="Edge nodes, each a leaf of two cloud nodes.")] = 2,
    runtime: Annotated[
        Path | None, typer.Option(help="Directory for sockets and configs (default: a temp dir).")
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="Restart a node that exits (backoff 0.5 s doubling to 30 s).")
    ] = True,
) -> None:
    """Start a local mesh of node processes on loopback; Ctrl-C stops them all. A node that
    dies is reported and restarted; the others keep running."""
    import tempfile

    from .mesh._keeper import Keeper
    from .mesh._up import LocalNode, clean_runtime, prepare_local_mesh, run_local_mesh
    from .runner import install_uvloop

    install_uvloop()
    where = runtime or Path(tempfile.mkdtemp(prefix="fabric-mesh-"))
    plan: list[LocalNode] = []
    try:
        plan = prepare_local_mesh(cloud, edge, where)
        asyncio.run(
            run_local_mesh(
                plan, where, lambda line: print(line, flush=True), keeper=Keeper(restart=restart)
            )
        )
    except FabricError as exc:
        err_console.print(f"[red]mesh failed:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        clean_runtime(plan, where, created=runtime is None)  # nothing left after Ctrl-C


@app.command()
def mesh(
    url: Annotated[
        str | None, typer.Option(help="Node URL (default: FABRIC_URL or the local node).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False,
) -> None:
    """Show a node's peers, links, round trips and interest."""
    from rich.table import Table

    snapshot = _status_or_exit(url)
    info = snapshot.get("mesh")
    if as_json:
        console.print_json(json.dumps(info))
        return
    if not info:
        console.print(f"node {snapshot['node']} is not part of a mesh")
        return
    console.print(
        f"[bold]{snapshot['node']}[/bold] role={info['role']} site={snapshot['site']} "
        f"cluster={info['cluster'] or '-'} local interest={info['local_interest']}"
    )
    peers = Table("peer", "kind", "site", "rtt ms", "link", "interest", title="peers")
    for p in info["peers"]:
        subjects = ", ".join(
            s + (f" [{q}]" if q else "") for s, q in p["interest"] if not s.startswith(INBOX_PREFIX)
        )
        peers.add_row(
            p["name"], p["kind"], p["site"], str(p["rtt_ms"]),
            "dialled" if p["dialed"] else "accepted", subjects,
        )
    console.print(peers)
    console.print(" ".join(f"{k}={v}" for k, v in info["stats"].items()))


agent_app = typer.Typer(help="Act on a running agent.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")


@agent_app.command("migrate")
def agent_migrate(
    name: Annotated[str, typer.Argument(help="The agent to move.")],
    to: Annotated[str, typer.Option("--to", help="URL (or failover list) of the new node.")],
    url: Annotated[
        str | None, typer.Option(help="A node of the mesh to ask through (default: local).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds the migration may take.")] = 30.0,
) -> None:
    """Move agent NAME to another node without losing a message (it must be running)."""
    from .runner import install_uvloop

    install_uvloop()
    try:
        report = asyncio.run(_ask_migrate(name, to, url, timeout))
    except FabricError as exc:
        err_console.print(f"[red]migration of {name} failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{name} now on node {report['node']} after {report['elapsed'] * 1000:.1f} ms "
        f"({report['keys_moved']} keys, {report['bytes_moved']} bytes of state carried, "
        f"{report['duplicates_dropped']} duplicates dropped)"
    )


async def _ask_migrate(name: str, to: str, url: str | None, timeout: float) -> dict[str, Any]:
    from sdk import connect

    from .private import control_subject

    async with connect("fabric-cli", url, reconnect=False, direct=False) as agent:
        reply = await agent.request(control_subject(name), to, timeout=timeout)
        return dict(json.loads(reply.text()))


def _register_optional() -> None:
    """Commands that live in other packages; absent extras leave a helpful stub."""
    try:
        from bench.cli import make_app
    except ImportError as exc:
        missing = str(exc)

        @app.command(name="bench")
        def bench_missing() -> None:
            """Benchmark the fabric (needs the [bench] extra)."""
            err_console.print(
                f"[red]fabric bench needs the bench extra[/red] ({missing}): "
                "pip install 'agent-fabric\\[bench]'"
            )
            raise typer.Exit(2)
    else:
        app.add_typer(make_app(), name="bench")


_register_optional()


@app.command()
def top(
    url: Annotated[
        list[str] | None,
        typer.Option(help="Node URL; repeat to watch several nodes (default: the local node)."),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 1.0,
    once: Annotated[bool, typer.Option(help="Print one screen (rates over one interval).")] = False,
    whole_mesh: Annotated[
        bool,
        typer.Option(
            "--mesh", help="Also every node reachable through peers' metrics addresses."
        ),
    ] = False,
) -> None:
    """Live view of nodes: rates, hop p50/p99, slow consumers, pool use, peers and round trips.

    Quit with q or Ctrl-C.
    """
    from .runner import install_uvloop
    from .top import run_top

    install_uvloop()
    try:
        asyncio.run(run_top(list(url) if url else [None], interval, once, whole_mesh))
    except KeyboardInterrupt:
        pass
    except FabricError as exc:
        err_console.print(f"[red]cannot reach node:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None


def _register_tools() -> None:
    """Shell tools: pub, sub, req, reply, gather (fabric/shell.py)."""
    from .shell import register

    register(app)


_register_tools()


def main() -> None:
    """Console-script entry point."""
    app()

"""``python -m gateways relay``: the edge side of a WebRTC link, as a process.

    python -m gateways relay --gateway https://gw:8080 --to mesh --listen 127.0.0.1:7000

``--to mesh`` relays an edge node's hub link (point its ``leaf_of`` at the printed
``tcp://`` URL, with ``mesh_transport = "tcp"``); ``--to agent`` relays SDK connections (give
agents the printed ``unix://`` URL and ``direct=False``). Prints ``relay ready URL`` once the
first data channel is open; stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from fabric.errors import FabricError

from ._server import parse_listen
from ._webrtc_agent import WebRtcRelay


async def _relay(args: argparse.Namespace) -> None:
    host, port = parse_listen(args.listen)
    relay = WebRtcRelay(
        args.gateway,
        token=args.token or os.environ.get("FABRIC_TOKEN"),
        to=args.to,
        listen_host=host,
        listen_port=port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await relay.start()
    try:
        print(f"relay ready {relay.url} (via {relay.gateway_url}, to {args.to})", flush=True)
        await stop.wait()
    finally:
        await relay.aclose()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 when the gateway refuses or cannot be reached)."""
    parser = argparse.ArgumentParser(prog="python -m gateways")
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="relay local connections over WebRTC to a gateway")
    relay.add_argument("--gateway", required=True, help="gateway base URL, http(s)://HOST:PORT")
    relay.add_argument("--to", choices=("agent", "mesh"), default="mesh")
    relay.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for --to mesh")
    relay.add_argument("--token", help="bearer token (default: FABRIC_TOKEN)")
    args = parser.parse_args(argv)
    from fabric.runner import install_uvloop

    install_uvloop()
    try:
        asyncio.run(_relay(args))
    except FabricError as exc:
        print(f"relay failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

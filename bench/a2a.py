"""A2A call latency: a2a-sdk's own HTTP server against the fabric (through the gateway, and over
the fabric binding), all in one run on this machine.

    python -m bench.a2a [--calls 400] [--warmup 50]

Every system runs the same agent: a2a-sdk's ``DefaultRequestHandler`` around the same echo
executor (``sdk.a2a.TextExecutor``), so only the path differs:

* ``a2a-sdk HTTP``: a2a-sdk's Starlette JSON-RPC app under uvicorn, its own JSON-RPC client;
* ``fabric gateway``: the agent on the fabric, reached at the gateway's ``/a2a/echo/`` with the
  same a2a-sdk client (one more hop: client → gateway → node → agent);
* ``fabric binding``: the same a2a-sdk client with the fabric transport (no HTTP).

A call is one blocking ``SendMessage`` (the task is created, run and completed; the reply is the
completed task). Calls are sequential, one in flight, the three systems interleaved in 8 rounds
(so a burst of load on this shared machine falls on all of them); p50/p99 come from an HDR
histogram.
Numbers go to docs/bench.md by hand; the ratio is what to compare (the machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ._stats import LatencySummary, histogram_from_samples, summarise

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _card(name: str, url: str = "") -> object:
    from a2a.types.a2a_pb2 import AgentInterface

    from sdk.a2a import agent_card

    card = agent_card(name, "Echoes its input.")
    if url:
        card.supported_interfaces.append(
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        )
    return card


async def _echo(text: str) -> str:
    return text


async def _serve_agent(url: str) -> None:
    from sdk import connect
    from sdk.a2a import TextExecutor, serve_a2a

    async with connect("echo", url) as agent:
        await serve_a2a(agent, _card("echo"), TextExecutor(_echo))  # type: ignore[arg-type]
        print("ready", flush=True)
        await asyncio.Event().wait()


def _serve_baseline(port: int) -> None:
    import uvicorn
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore
    from starlette.applications import Starlette

    from sdk.a2a import TextExecutor

    card = _card("echo", f"http://127.0.0.1:{port}/")
    handler = DefaultRequestHandler(
        agent_executor=TextExecutor(_echo), task_store=InMemoryTaskStore(), agent_card=card  # type: ignore[arg-type]
    )
    app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")]  # type: ignore[arg-type]
    )
    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _child(*args: str, env: dict[str, str], ready: str) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=None
    )
    assert proc.stdout is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line:
                raise RuntimeError(f"{args} exited before it was ready")
            if ready in line.decode():
                break
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def _wait_http(url: str) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(200):  # the server prints ready just before it binds: poll, bounded
            with contextlib.suppress(httpx.TransportError):
                await client.get(url)
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


async def _calls(client: object, count: int, samples: list[int] | None) -> None:
    """``count`` sequential SendMessage calls; their latencies go to ``samples`` (if given)."""
    from a2a.types.a2a_pb2 import Role, SendMessageRequest

    for _ in range(count):
        request = SendMessageRequest()
        request.message.role = Role.ROLE_USER
        request.message.message_id = uuid.uuid4().hex
        request.message.parts.add().text = "ping"
        start = time.perf_counter_ns()
        async for _ in client.send_message(request):  # type: ignore[attr-defined]
            pass
        if samples is not None:
            samples.append(time.perf_counter_ns() - start)


async def _measure(
    clients: dict[str, object], calls: int, warmup: int, rounds: int = 8
) -> dict[str, LatencySummary]:
    """Interleave the systems in ``rounds`` rounds, so the machine's noise falls on all of
    them alike; bounded in count and in time."""
    samples: dict[str, list[int]] = {label: [] for label in clients}
    for client in clients.values():
        await _calls(client, warmup, None)
    deadline = time.monotonic() + 300
    for _ in range(rounds):
        for label, client in clients.items():
            await _calls(client, max(1, calls // rounds), samples[label])
        if time.monotonic() > deadline:
            break
    return {label: summarise(histogram_from_samples(s)) for label, s in samples.items()}


async def run(calls: int, warmup: int) -> dict[str, LatencySummary]:
    """The three systems' latency summaries. Raises RuntimeError when a child fails to start."""
    from a2a.client import ClientConfig, ClientFactory

    from sdk import connect
    from sdk.a2a import fabric_client

    with tempfile.TemporaryDirectory(prefix="bench-a2a-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["XDG_RUNTIME_DIR"] = tmp
        url = f"unix://{Path(tmp) / 'node.sock'}"
        py = sys.executable
        base_port, gw_port = _free_port(), _free_port()
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(_child(
                py, "-m", "fabric", "node", "--name", "bench-a2a", "--socket",
                str(Path(tmp) / "node.sock"), env=env, ready="ready"))
            await stack.enter_async_context(
                _child(py, "-m", "bench.a2a", "agent", url, env=env, ready="ready"))
            await stack.enter_async_context(
                _child(py, "-m", "bench.a2a", "baseline", str(base_port), env=env, ready="ready"))
            await stack.enter_async_context(_child(
                py, "-m", "fabric", "gateway", "--url", url, "--listen",
                f"127.0.0.1:{gw_port}", "--no-webrtc", env=env, ready="gateway ready"))
            await _wait_http(f"http://127.0.0.1:{base_port}/.well-known/agent-card.json")
            factory = ClientFactory(ClientConfig(streaming=False))
            clients: dict[str, object] = {
                "a2a-sdk HTTP (uvicorn + httpx)": await factory.create_from_url(
                    f"http://127.0.0.1:{base_port}/"
                ),
                "fabric gateway (/a2a/echo/)": await factory.create_from_url(
                    f"http://127.0.0.1:{gw_port}/a2a/echo/"
                ),
            }
            agent = await stack.enter_async_context(connect("bench-a2a-client", url))
            clients["fabric binding (a2a-sdk client, fabric transport)"] = await fabric_client(
                agent, "echo", streaming=False
            )
            results = await _measure(clients, calls, warmup)
            for client in clients.values():
                await client.close()  # type: ignore[attr-defined]
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.a2a``: prints one markdown table (p50, p99, ratio to a2a-sdk HTTP)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["agent"]:
        asyncio.run(_serve_agent(args[1]))
        return 0
    if args[:1] == ["baseline"]:
        _serve_baseline(int(args[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.a2a")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    opts = parser.parse_args(args)
    results = asyncio.run(run(opts.calls, opts.warmup))
    base = next(iter(results.values())).p50_us
    print("| A2A SendMessage, one in flight | p50 | p99 | p50 vs a2a-sdk HTTP |")
    print("|---|---:|---:|---:|")
    for label, s in results.items():
        print(f"| {label} | {s.p50_us:,.0f} µs | {s.p99_us:,.0f} µs | {s.p50_us / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

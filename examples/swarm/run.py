"""The swarm in one command: ``python examples/swarm/run.py`` (``--demo`` to run the walkthrough
and exit).

Starts a node, the llm, five reviewers, the tools agent, the planner and the gateway, then
drives them the way an outside client would: the official A2A client asks the planner (through
the gateway) and streams its answer; the official MCP client lists and calls the tools at
``/mcp``. Everything stays up until Ctrl-C unless ``--demo`` is given. See docs/interop.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path

from a2a.client import ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import Role, SendMessageRequest, TaskState
from mcp import Client

ROOT = Path(__file__).resolve().parents[2]

AGENTS = Path(__file__).resolve().parent / "agents.py"
READY_TIMEOUT = 60.0
_echoes: set[asyncio.Future[None]] = set()


async def start(
    label: str, *args: str, env: dict[str, str], ready: str
) -> asyncio.subprocess.Process:
    """Start a child and wait for its ready line (its output is echoed, prefixed)."""
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None

    async def until_ready() -> None:
        while True:
            line = await proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"{label} exited before it was ready")
            text = line.decode().rstrip()
            print(f"[{label}] {text}", flush=True)
            if ready in text:
                return

    await asyncio.wait_for(until_ready(), READY_TIMEOUT)

    async def echo() -> None:
        async for line in proc.stdout:  # type: ignore[union-attr]
            print(f"[{label}] {line.decode().rstrip()}", flush=True)

    _echoes.add(asyncio.ensure_future(echo()))
    return proc


async def walkthrough(gateway: str) -> None:
    print(f"\n== A2A: the planner's card at {gateway}/a2a/planner/.well-known/agent-card.json")
    factory = ClientFactory(ClientConfig(streaming=True))
    client = await factory.create_from_url(f"{gateway}/a2a/planner/")
    request = SendMessageRequest()
    request.message.role = Role.ROLE_USER
    request.message.message_id = uuid.uuid4().hex
    request.message.parts.add().text = "ship the fabric to every agent"
    print("== A2A: SendStreamingMessage to the planner (SSE through the gateway):")
    async for event in client.send_message(request):
        if event.HasField("artifact_update"):
            for part in event.artifact_update.artifact.parts:
                print(part.text, end="", flush=True)
        elif event.HasField("status_update"):
            state = TaskState.Name(event.status_update.status.state)
            print(f"\n   [task {event.status_update.task_id[:8]}: {state}]", flush=True)
    await client.close()
    print(f"\n== MCP: tools at {gateway}/mcp (streamable HTTP)")
    async with Client(f"{gateway}/mcp") as mcp_client:
        for found in (await mcp_client.list_tools()).tools:
            print(f"   {found.name}: {found.description}")
        result = await mcp_client.call_tool("add", {"a": 20, "b": 22})
        print(f"   add(20, 22) -> {result.content[0].text}")  # type: ignore[union-attr]


async def main(demo: bool, listen: str) -> None:
    with tempfile.TemporaryDirectory(prefix="swarm-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["XDG_RUNTIME_DIR"] = tmp
        sock = Path(tmp) / "node.sock"
        url = f"unix://{sock}"
        py = sys.executable
        procs = []
        try:
            procs.append(await start("node", py, "-m", "fabric", "node", "--name", "swarm",
                                     "--socket", str(sock), env=env, ready="ready"))
            for role in ("llm", "reviewers", "tools", "planner"):
                procs.append(await start(role, py, str(AGENTS), role, url, env=env, ready="ready"))
            procs.append(await start("gateway", py, "-m", "fabric", "gateway", "--url", url,
                                     "--listen", listen, "--no-webrtc", env=env,
                                     ready="gateway ready"))
            gateway = f"http://{listen}"
            await walkthrough(gateway)
            if not demo:
                print(f"\nThe swarm is up: gateway {gateway}, node {url}.")
                print(f"  A2A cards: {gateway}/a2a/{{planner,llm,reviewer-0}}/"
                      ".well-known/agent-card.json")
                print(f"  MCP: {gateway}/mcp, or stdio: FABRIC_URL={url} fabric mcp")
                print("Ctrl-C stops it.")
                await asyncio.Event().wait()
        finally:
            for proc in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="run the walkthrough, then stop")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="gateway HOST:PORT")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.demo, args.listen))

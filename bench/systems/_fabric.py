"""The system under test: Agent Fabric through its SDK (``from sdk import connect``).

Without ``--url`` the bench starts its own local node (``python -m fabric node``) in a
temporary directory and waits for its ``ready`` line. Every agent of a worker process is its
own ``connect()``, so fan-out children really are 16 agents, not 16 handlers of one agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench._payloads import FAN_REPLY, big_ok, map_result, parse_stream_request
from bench._plan import ProcPlan, agents_with_role
from bench._procs import Child, start_child
from bench.systems._base import Announce, Client, System, WorkerInfo
from fabric.errors import NoResponders, RemoteProtocolError, Timeout

if TYPE_CHECKING:
    from sdk import Agent, Msg

__all__ = ["FabricCrossNodeSystem", "FabricLatencySystem", "FabricSystem"]

_OP_TIMEOUT_S = 30.0


def _mode(env: dict[str, Any]) -> bool | None:
    """``latency_mode`` for ``connect``: on for the latency-mode row, else the SDK default."""
    return True if env.get("latency_mode") else None


def _data(item: Any) -> Any:
    """The payload of a reply, whether the SDK hands out a ``Msg`` or the bytes themselves."""
    if isinstance(item, BaseException):
        raise item
    return getattr(item, "data", item)


class FabricSystem(System):
    name = "fabric"
    label = "Agent Fabric"
    hint = (
        "the fabric SDK (sdk.connect) is not importable: install this repository (pip install -e .)"
    )
    modules = ("sdk", "fabric")
    packages = ("agent-fabric", "pyzmq", "msgpack")
    #: Agents spin briefly for replies instead of sleeping (``connect(latency_mode=True)``).
    latency_mode: ClassVar[bool] = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._node: Child | None = None

    def skip_reason(self) -> str | None:
        reason = super().skip_reason()
        if reason is not None:
            return reason
        try:
            from sdk import connect  # noqa: F401
        except ImportError as exc:
            return f"sdk.connect is not available yet ({exc})"
        return None

    async def start_env(self, workdir: Path) -> dict[str, Any]:
        url = self.options.get("url")
        if url:
            return {"url": url, "latency_mode": self.latency_mode}
        socket_path = workdir / "node.sock"
        self._node = await start_child(
            "fabric node",
            [
                sys.executable,
                "-m",
                "fabric",
                "node",
                "--name",
                "bench",
                "--socket",
                str(socket_path),
            ],
            ready="ready",
        )
        return {"url": f"unix://{socket_path}", "latency_mode": self.latency_mode}

    async def stop_env(self) -> None:
        if self._node is not None:
            await self._node.stop()
            self._node = None

    async def serve(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: asyncio.Event
    ) -> None:
        from sdk import connect

        async with contextlib.AsyncExitStack() as stack:
            keep: list[Any] = []
            for agent_plan in plan.agents:
                agent = await stack.enter_async_context(
                    connect(
                        agent_plan.name,
                        url=env.get("worker_url") or env["url"],
                        latency_mode=_mode(env),
                        direct_tcp=env.get("direct_tcp"),
                    )
                )
                keep.extend(await _register_roles(agent, agent_plan.name, agent_plan.roles))
                await agent.flush()
            announce({})
            try:
                await stop.wait()
            finally:
                for item in keep:
                    if isinstance(item, asyncio.Task):
                        item.cancel()

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        from sdk import connect

        stack = contextlib.AsyncExitStack()
        agent = await stack.enter_async_context(
            connect("bench-client", url=env["url"], latency_mode=_mode(env))
        )
        client = _FabricClient(agent, stack, layout)
        try:
            await client.wait_for_agents(20.0)
        except BaseException:
            await stack.aclose()
            raise
        return client


async def _register_roles(agent: Agent, name: str, roles: Sequence[str]) -> list[Any]:
    """Subscribe the handlers of ``roles``; each ``serve`` returns once the node has it."""
    keep: list[Any] = []

    async def ping(msg: Msg) -> bytes:
        return name.encode()

    async def echo(msg: Msg) -> Any:
        return msg.data

    async def fan(msg: Msg) -> bytes:
        return FAN_REPLY

    async def map_(msg: Msg) -> bytes:
        return map_result(msg.data)

    async def big(msg: Msg) -> bytes:
        return big_ok(msg.data)

    async def stream(msg: Msg) -> AsyncIterator[bytes]:
        chunks, size = parse_stream_request(msg.data)
        chunk = b"x" * size
        for _ in range(chunks):
            yield chunk

    for role, subject, fn, queue in (
        ("echo", "bench.echo", echo, None),
        ("fan", "bench.fan", fan, None),
        ("map", "bench.map", map_, "map"),
        ("big", "bench.big", big, None),
        ("stream", "bench.stream", stream, None),
    ):
        if role in roles:
            keep.append(await agent.serve(subject, fn, queue=queue))
    if "sink" in roles:
        counted = [0]
        target = [0]
        reached = asyncio.Event()
        sub = await agent.subscribe("bench.tp")

        async def count() -> None:
            async for _msg in sub:
                counted[0] += 1
                if target[0] and counted[0] >= target[0]:
                    reached.set()

        async def end(msg: Msg) -> bytes:
            target[0] = int(bytes(msg.data))
            if counted[0] >= target[0]:
                reached.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reached.wait(), _OP_TIMEOUT_S)
            result = str(counted[0]).encode()
            counted[0], target[0] = 0, 0
            reached.clear()
            return result

        keep.append(asyncio.create_task(count()))
        keep.append(await agent.serve("bench.tp.end", end))
    # Last: a node that routes ``bench.ping`` to this agent has had every subscription
    # above announced before it (a peer node learns them in order), so one answered ping
    # per agent means the whole layout is reachable, on one node or across two.
    keep.append(await agent.serve("bench.ping", ping))
    return keep


class _FabricClient(Client):
    def __init__(
        self, agent: Agent, stack: contextlib.AsyncExitStack[Any], layout: Sequence[ProcPlan]
    ) -> None:
        self._agent = agent
        self._stack = stack
        self._agents = sum(len(p.agents) for p in layout)
        self._fans = len(agents_with_role(layout, "fan"))
        self._bigs = len(agents_with_role(layout, "big"))

    async def wait_for_agents(self, within_s: float) -> None:
        """Check that every worker agent answers one gather.

        Workers subscribe with ``serve`` and ``flush`` before they say ready, so their own
        node already holds their interest and one gather reaches them all. A client on
        another node learns that interest one announcement at a time: it asks again until
        every agent answers (bounded).

        Raises:
            Timeout: some agents did not answer within ``within_s``.
        """
        deadline = time.monotonic() + within_s
        answered = 0
        while time.monotonic() < deadline:
            try:
                replies = await self._agent.gather(
                    "bench.ping", b"", deadline=max(0.1, deadline - time.monotonic())
                )
                answered = len(replies)
            except NoResponders:
                answered = 0
            if answered >= self._agents:
                return
            await asyncio.sleep(0.05)
        raise Timeout(
            f"only {answered} of {self._agents} fabric agents answered", subject="bench.ping"
        )

    async def request(self, payload: bytes) -> int:
        reply = await self._agent.request("bench.echo", payload, timeout=_OP_TIMEOUT_S)
        return len(_data(reply))

    async def fanout(self, payload: bytes) -> int:
        replies = await self._agent.gather("bench.fan", payload, deadline=_OP_TIMEOUT_S)
        return sum(1 for r in replies if bytes(_data(r)) == FAN_REPLY)

    async def map(self, tasks: Sequence[bytes], concurrency: int) -> list[bytes]:
        results = await self._agent.map(
            "bench.map", list(tasks), timeout=_OP_TIMEOUT_S, concurrency=concurrency
        )
        return [bytes(_data(r)) for r in results]

    async def bigfan(self, payload: bytes) -> int:
        expected = b"ok:" + str(len(payload)).encode()
        replies = await self._agent.gather("bench.big", payload, deadline=_OP_TIMEOUT_S)
        return sum(1 for r in replies if bytes(_data(r)) == expected)

    async def stream(self, chunks: int, size: int) -> int:
        received = 0
        async for chunk in self._agent.stream(
            "bench.stream", f"{chunks}:{size}".encode(), timeout=_OP_TIMEOUT_S
        ):
            received += len(_data(chunk))
        return received

    async def throughput(self, count: int, size: int, budget_s: float) -> tuple[int, float]:
        payload = b"m" * size
        publish = self._agent.publish
        start = time.perf_counter()
        deadline = start + budget_s
        sent = 0
        while sent < count:
            await publish("bench.tp", payload)
            sent += 1
            if sent % 1024 == 0 and time.perf_counter() >= deadline:
                break
        await self._agent.flush()
        reply = await self._agent.request("bench.tp.end", str(sent).encode(), timeout=_OP_TIMEOUT_S)
        delivered = int(bytes(_data(reply)))
        if delivered > sent:
            raise RemoteProtocolError(f"sink counted {delivered} of {sent} messages")
        return delivered, time.perf_counter() - start

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stack.aclose(), 5)


class FabricLatencySystem(FabricSystem):
    """The fabric in latency mode: agents spin briefly on replies before sleeping, trading
    CPU for wake-up latency. Measured on ``rr`` only (the design's latency-mode target)."""

    name = "fabric-latency"
    label = "Agent Fabric, latency mode"
    latency_mode = True
    only_scenarios = ("rr",)


class FabricCrossNodeSystem(FabricSystem):
    """The fabric across two nodes: the client's agent on one node, every responder on the
    other, the nodes linked as a cluster over TCP on loopback. Every scenario but ``bigfan``
    (whose point is one copy in shared memory for local readers); DESIGN's cross-node
    target is "no slower than aiohttp between the same two processes"."""

    name = "fabric-crossnode"
    label = "Agent Fabric, two nodes"
    only_scenarios: ClassVar[tuple[str, ...]] = ("rr", "fanout", "map", "stream", "throughput")
    #: Host the responders open a direct TCP port on (``connect(direct_tcp=...)``); ""
    #: leaves it closed, so every message goes through both nodes.
    direct_tcp: ClassVar[str] = ""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._nodes: list[Child] = []

    async def start_env(self, workdir: Path) -> dict[str, Any]:
        ports = [_free_port(), _free_port()]
        urls = []
        for i, port in enumerate(ports):
            peer = ports[1 - i]
            config = workdir / f"node{i}.toml"
            config.write_text(
                f'cluster = "tcp://127.0.0.1:{port}"\nseeds = ["tcp://127.0.0.1:{peer}"]\n'
            )
            socket_path = workdir / f"node{i}.sock"
            self._nodes.append(
                await start_child(
                    f"fabric node {i}",
                    [
                        sys.executable,
                        "-m",
                        "fabric",
                        "node",
                        "--name",
                        f"bench{i}",
                        "--socket",
                        str(socket_path),
                        "--config",
                        str(config),
                    ],
                    ready="ready",
                )
            )
            urls.append(f"unix://{socket_path}")
        await _wait_linked(urls[0], "bench1")
        return {
            "url": urls[0],
            "worker_url": urls[1],
            "latency_mode": False,
            "direct_tcp": self.direct_tcp,
        }

    async def stop_env(self) -> None:
        nodes, self._nodes = self._nodes, []
        for node in nodes:
            await node.stop()



class FabricCrossNodeDirectSystem(FabricCrossNodeSystem):
    """The same two nodes, the responders also listening on TCP (``FABRIC_DIRECT_TCP``):
    requests and gathers go agent to agent with a node-signed grant, no node on the path
    (docs/mesh.md, "Direct paths across hosts"). Streams, publishes and shared-memory
    payloads still cross the nodes, so only the request patterns are measured."""

    name = "fabric-crossnode-direct"
    label = "Agent Fabric, two nodes, direct"
    only_scenarios = ("rr", "fanout", "map")
    direct_tcp = "127.0.0.1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_linked(url: str, peer: str, timeout_s: float = 20.0) -> None:
    """Until the node at ``url`` lists ``peer`` among its mesh peers (bounded)."""
    from sdk import connect

    deadline = time.monotonic() + timeout_s
    async with connect("bench-probe", url, reconnect=False, direct=False) as probe:
        while time.monotonic() < deadline:
            mesh = (await probe.node_status()).get("mesh") or {}
            if any(p.get("name") == peer for p in mesh.get("peers", [])):
                return
            await asyncio.sleep(0.05)
    raise Timeout(f"node {peer} did not link within {timeout_s:g} s")

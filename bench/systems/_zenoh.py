"""Baseline: Zenoh through eclipse-zenoh, peer mode on loopback, shared memory on.

No scouting: multicast and gossip are off, and every worker connects to the bench's own
session on an explicit ``tcp/127.0.0.1:<free port>`` endpoint, so nothing leaves loopback and
no other Zenoh on the machine joins. Shared memory is enabled with a 256 MiB pool; big
payloads are written once into a buffer from the SHM provider, so receivers on the host get a
reference, not a copy over TCP.

The Python API is blocking (callbacks on Zenoh's threads, or blocking channels), so the client
is a blocking :class:`~bench.systems._base.Client`: the harness runs its measurement loops in one
thread, which is how the API is used at its best. Fan-out, map and big payloads are queries to
one queryable per agent (``bench/fan/<agent>``…), with consolidation off so every reply counts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._payloads import FAN_REPLY, big_ok, map_result, parse_stream_request
from bench._plan import ProcPlan, agents_with_role
from bench.systems._base import Announce, Client, System, WorkerInfo
from bench.systems._nats import free_port
from fabric.errors import Timeout

__all__ = ["ZenohSystem", "zenoh_config"]

_OP_TIMEOUT_S = 30.0
_SHM_POOL = 256 * 1024 * 1024
_SHM_THRESHOLD = 64 * 1024


def zenoh_config(*, listen: list[str], connect: list[str]) -> Any:
    """A peer configuration on explicit loopback endpoints, scouting off, shm on."""
    import zenoh

    config = zenoh.Config()
    settings: dict[str, Any] = {
        "mode": "peer",
        "listen/endpoints": listen,
        "connect/endpoints": connect,
        "scouting/multicast/enabled": False,
        "scouting/gossip/enabled": False,
        "transport/shared_memory/enabled": True,
        "transport/shared_memory/transport_optimization/pool_size": _SHM_POOL,
    }
    for key, value in settings.items():
        config.insert_json5(key, json.dumps(value))
    return config


class ZenohSystem(System):
    name = "zenoh"
    label = "Zenoh (eclipse-zenoh, shm on)"
    hint = "pip install eclipse-zenoh"
    modules = ("zenoh",)
    packages = ("eclipse-zenoh",)
    blocking_worker = True

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._session: Any = None

    async def start_env(self, workdir: Path) -> dict[str, Any]:
        import zenoh

        # The bench's session listens first, so workers have somewhere to connect to.
        endpoint = f"tcp/127.0.0.1:{free_port()}"
        self._session = zenoh.open(zenoh_config(listen=[endpoint], connect=[]))
        return {"connect": endpoint}

    async def stop_env(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def serve_blocking(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: threading.Event
    ) -> None:
        import zenoh

        session: Any = zenoh.open(
            zenoh_config(listen=["tcp/127.0.0.1:0"], connect=[env["connect"]])
        )
        keep: list[Any] = []
        try:
            for agent in plan.agents:
                keep.extend(_declare_roles(session, agent.name, agent.roles))
            announce({})
            stop.wait()
        finally:
            for entity in keep:
                entity.undeclare()
            session.close()

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        import asyncio

        client = _ZenohClient(self._session, layout)
        await asyncio.to_thread(client.wait_for_agents, 20.0)
        return client


def _declare_roles(session: Any, name: str, roles: Sequence[str]) -> list[Any]:
    import zenoh

    declared: list[Any] = []

    def queryable(key: str, on_query: Any) -> None:
        declared.append(session.declare_queryable(key, on_query, complete=True))

    queryable(f"bench/ping/{name}", lambda q: q.reply(q.key_expr, name.encode()))
    if "echo" in roles:
        queryable("bench/echo", lambda q: q.reply(q.key_expr, q.payload))
    if "fan" in roles:
        queryable(f"bench/fan/{name}", lambda q: q.reply(q.key_expr, FAN_REPLY))
    if "map" in roles:
        queryable(
            f"bench/map/{name}",
            lambda q: q.reply(q.key_expr, map_result(q.payload.to_bytes())),
        )
    if "big" in roles:
        # to_bytes() is the only way this API reads a payload's bytes (ZBytes has no buffer
        # interface), so checking costs a copy here.
        queryable(f"bench/big/{name}", lambda q: q.reply(q.key_expr, big_ok(q.payload.to_bytes())))
    if "stream" in roles:

        def stream(query: Any) -> None:
            chunks, size = parse_stream_request(query.payload.to_bytes())
            chunk = b"x" * size
            for _ in range(chunks):
                query.reply(query.key_expr, chunk, congestion_control=zenoh.CongestionControl.BLOCK)

        queryable("bench/stream", stream)
    if "sink" in roles:
        # Only Zenoh's delivery thread writes the count while messages flow; the end query
        # resets it once the sender has stopped, so the hot path needs no lock.
        count = [0]
        target = [0]
        reached = threading.Event()

        def on_sample(_sample: Any) -> None:
            count[0] += 1
            if target[0] and count[0] >= target[0]:
                reached.set()

        declared.append(session.declare_subscriber("bench/tp", on_sample))

        def finish(query: Any, wanted: int) -> None:
            target[0] = wanted
            if count[0] >= wanted:
                reached.set()
            reached.wait(_OP_TIMEOUT_S)
            counted = count[0]
            count[0], target[0] = 0, 0
            reached.clear()
            query.reply(query.key_expr, str(counted).encode())
            query.drop()

        def on_end(query: Any) -> None:
            # Waiting here would hold a Zenoh thread that also delivers the samples.
            wanted = int(query.payload.to_bytes())
            threading.Thread(target=finish, args=(query, wanted), daemon=True).start()

        queryable("bench/tpend", on_end)
    return declared


class _ZenohClient(Client):
    blocking = True

    def __init__(self, session: Any, layout: Sequence[ProcPlan]) -> None:
        import zenoh

        self._zenoh = zenoh
        self._session = session
        self._agents = [a.name for p in layout for a in p.agents]
        every = {
            "target": zenoh.QueryTarget.ALL,
            "consolidation": zenoh.ConsolidationMode.NONE,
            "timeout": _OP_TIMEOUT_S,
        }
        self._echo = session.declare_querier("bench/echo", timeout=_OP_TIMEOUT_S)
        self._fan = session.declare_querier("bench/fan/*", **every)
        self._big = session.declare_querier("bench/big/*", **every)
        self._stream = session.declare_querier("bench/stream", **every)
        self._maps = [
            session.declare_querier(f"bench/map/{a.name}", timeout=_OP_TIMEOUT_S)
            for a in agents_with_role(layout, "map")
        ]
        self._fans = len(agents_with_role(layout, "fan"))
        self._bigs = len(agents_with_role(layout, "big"))
        self._publisher = session.declare_publisher(
            "bench/tp", congestion_control=zenoh.CongestionControl.BLOCK
        )
        self._shm: Any = None
        try:
            self._shm = zenoh.shm.ShmProvider.default_backend(_SHM_POOL)
        except Exception:  # shm is unstable API; fall back to plain bytes (still shm-optimised)
            self._shm = None

    def wait_for_agents(self, within_s: float) -> None:
        """Return once every agent's queryable answers (declarations propagate asynchronously).

        Raises:
            Timeout: some agents were still unreachable after ``within_s``.
        """
        deadline = time.monotonic() + within_s
        missing = set(self._agents)
        while missing and time.monotonic() < deadline:
            for reply in self._session.get(
                "bench/ping/*",
                target=self._zenoh.QueryTarget.ALL,
                consolidation=self._zenoh.ConsolidationMode.NONE,
                timeout=1.0,
            ):
                if reply.ok is not None:
                    missing.discard(reply.ok.payload.to_bytes().decode())
        if missing:
            raise Timeout(f"zenoh agents not reachable: {sorted(missing)}")

    def _payload(self, data: bytes) -> Any:
        if self._shm is None or len(data) < _SHM_THRESHOLD:
            return data
        shm = self._zenoh.shm
        buf = self._shm.alloc(len(data), shm.BlockOn(shm.GarbageCollect()))
        buf[:] = data
        return self._zenoh.ZBytes(buf)

    def request(self, payload: bytes) -> int:
        for reply in self._echo.get(payload=self._payload(payload)):
            if reply.ok is not None:
                return len(reply.ok.payload)
        return -1

    def fanout(self, payload: bytes) -> int:
        return sum(
            1
            for r in self._fan.get(payload=payload)
            if r.ok is not None and r.ok.payload.to_bytes() == FAN_REPLY
        )

    def map(self, tasks: Sequence[bytes], concurrency: int) -> list[bytes]:
        results: list[bytes] = [b""] * len(tasks)
        in_flight: deque[tuple[int, Any]] = deque()
        for i, task in enumerate(tasks):
            in_flight.append((i, self._maps[i % len(self._maps)].get(payload=task)))
            if len(in_flight) >= concurrency:
                self._collect_one(in_flight, results)
        while in_flight:
            self._collect_one(in_flight, results)
        return results

    @staticmethod
    def _collect_one(in_flight: deque[tuple[int, Any]], results: list[bytes]) -> None:
        index, replies = in_flight.popleft()
        for reply in replies:
            if reply.ok is not None:
                results[index] = reply.ok.payload.to_bytes()

    def bigfan(self, payload: bytes) -> int:
        expected = b"ok:" + str(len(payload)).encode()
        return sum(
            1
            for r in self._big.get(payload=self._payload(payload))
            if r.ok is not None and r.ok.payload.to_bytes() == expected
        )

    def stream(self, chunks: int, size: int) -> int:
        return sum(
            len(r.ok.payload)
            for r in self._stream.get(payload=f"{chunks}:{size}".encode())
            if r.ok is not None
        )

    def throughput(self, count: int, size: int, budget_s: float) -> tuple[int, float]:
        payload = b"m" * size
        put = self._publisher.put
        start = time.perf_counter()
        deadline = start + budget_s
        sent = 0
        while sent < count:
            put(payload)
            sent += 1
            if sent % 1024 == 0 and time.perf_counter() >= deadline:
                break
        for reply in self._session.get(
            "bench/tpend", payload=str(sent).encode(), timeout=_OP_TIMEOUT_S
        ):
            if reply.ok is not None:
                return int(reply.ok.payload.to_bytes()), time.perf_counter() - start
        raise Timeout("the sink did not confirm", subject="bench/tpend")

    async def aclose(self) -> None:
        for entity in (self._echo, self._fan, self._big, self._stream, *self._maps):
            entity.undeclare()
        self._publisher.undeclare()

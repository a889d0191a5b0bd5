"""Fast chaos scenarios (the normal suite): real node, agent and redis-server processes, faults
injected with signals and a link cut, every operation recorded and judged by the checker.

Each scenario states the guarantee it holds the fabric to (docs/reliability.md has the table)
and fails on any violation the checker finds.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from delay_proxy import DelayProxy
from procs import start_node, until

from sdk import connect

from . import drive
from .checker import check_messages, check_requests, check_stream, check_writes
from .history import History, load

pytestmark = [pytest.mark.timeout(90), pytest.mark.faults]


async def test_node_kill_9_every_request_ends_in_reply_or_typed_error(
    tmp_path: Path, fabric_env: dict[str, str], agent_procs
) -> None:
    """Guarantee: a request ends in its reply or a typed error, across kill -9 of the node."""
    sock = tmp_path / "node.sock"
    node = await start_node(sock, fabric_env, name="n1")
    history = History()
    try:
        await agent_procs("echo", node.url)
        async with connect("client", node.url, direct=False) as client:
            stop = asyncio.Event()
            load_task = asyncio.ensure_future(
                asyncio.gather(
                    *(
                        drive.requests(agent, history, "svc.echo", until=stop, timeout=2)
                        for agent in [client]
                    )
                )
            )
            await asyncio.sleep(0.5)  # traffic flowing (the rate, not a synchronisation)
            node.kill(signal.SIGKILL)
            await node.process.wait()
            node = await start_node(sock, fabric_env, name="n1")
            await until(_answers(client), what="the echo agent back after the restart")
            stop.set()
            await load_task
    finally:
        await node.stop()
    report = check_requests(history.events)
    assert not report.violations("reply_or_typed_error"), report.explain("reply_or_typed_error")
    assert report.counts["reply"] > 50 and report.counts["hang"] == 0
    print(f"node kill -9: requests {dict(report.counts)}")


def _answers(agent):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        try:
            return (await agent.request("svc.echo", "ping", timeout=1)).text() == "ping"
        except Exception:
            return False

    return check


async def test_node_sigstop_requests_time_out_typed_then_recover(
    node, agent_procs
) -> None:
    """Guarantee: a request ends in its reply or a typed error while the node is frozen."""
    await agent_procs("echo", node.url)
    history = History()
    async with connect("client", node.url, direct=False) as client:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            drive.requests(client, history, "svc.echo", until=stop, timeout=0.5)
        )
        await asyncio.sleep(0.3)
        node.kill(signal.SIGSTOP)
        await asyncio.sleep(1.5)  # frozen for three request timeouts
        node.kill(signal.SIGCONT)
        await until(_answers(client), what="answers after SIGCONT")
        stop.set()
        await task
    report = check_requests(history.events)
    assert not report.violations("reply_or_typed_error"), report.explain("reply_or_typed_error")
    assert report.counts["typed_error"] >= 1, "requests during the freeze ended in Timeout"
    print(f"node SIGSTOP: requests {dict(report.counts)}")


async def test_responder_sigstop_and_kill_9_requests_end_typed(node, agent_procs) -> None:
    """Guarantee: a request ends in its reply or a typed error when its responder freezes,
    then dies (a second member of the queue group keeps serving)."""
    victim = await agent_procs("echo", node.url, "echo-1")
    await agent_procs("echo", node.url, "echo-2")
    history = History()
    async with connect("client", node.url, direct=False) as client:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            drive.requests(client, history, "svc.echo", until=stop, timeout=0.5)
        )
        await asyncio.sleep(0.3)
        victim.kill(signal.SIGSTOP)
        await asyncio.sleep(1.0)
        victim.kill(signal.SIGKILL)
        await victim.process.wait()
        await asyncio.sleep(0.5)
        stop.set()
        await task
    report = check_requests(history.events)
    assert not report.violations("reply_or_typed_error"), report.explain("reply_or_typed_error")
    assert report.counts["reply"] > 20
    print(f"responder SIGSTOP then kill -9: requests {dict(report.counts)}")


async def test_pubsub_is_at_most_once_across_a_node_kill_and_a_frozen_subscriber(
    tmp_path: Path, fabric_env: dict[str, str], agent_procs
) -> None:
    """Guarantee: publish/subscribe delivers each message at most once (loss is allowed under
    these faults and counted), for a subscriber in the test and one in an agent process that
    is frozen with SIGSTOP for a while."""
    sock = tmp_path / "node.sock"
    node = await start_node(sock, fabric_env, name="n1")
    history = History()
    agent_file = tmp_path / "chaos-sub.jsonl"
    try:
        frozen = await agent_procs("chaos-subscriber", node.url, "chaos.events", str(agent_file))
        async with (
            connect("pub", node.url) as pub,
            connect("sub", node.url) as sub,
        ):
            await sub.subscribe("chaos.events", callback=drive.recorder(history, "sub"))
            await sub.flush()
            sender = asyncio.ensure_future(
                drive.publishes(pub, history, "chaos.events", count=600, interval=0.004)
            )
            await asyncio.sleep(0.4)
            frozen.kill(signal.SIGSTOP)
            await asyncio.sleep(0.6)
            frozen.kill(signal.SIGCONT)
            node.kill(signal.SIGKILL)
            await node.process.wait()
            node = await start_node(sock, fabric_env, name="n1")
            await asyncio.wait_for(sender, 60)
            await pub.flush()
            await sub.flush()
    finally:
        await node.stop()
    events = history.events + load(agent_file)
    report = check_messages(events, ["sub", "chaos-sub"])
    assert not report.violations("at_most_once"), report.explain("at_most_once")
    assert report.counts["delivered_once"] > 300
    print(f"pub/sub across kill -9: {dict(report.counts)}")


async def test_acknowledged_state_writes_survive_kill_9_of_the_node(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    """Guarantee: an acknowledged state write is durable (embedded store, every write)."""
    sock = tmp_path / "node.sock"
    env = {**fabric_env, "FABRIC_STATE_DURABILITY": "always"}
    node = await start_node(sock, env, name="n1")
    history = History()
    try:
        async with connect("writer", node.url, reconnect=False, direct=False) as writer:
            stop = asyncio.Event()
            task = asyncio.ensure_future(drive.writes(writer, history, keys=20, until=stop))
            await until(_acked(history, 200), what="200 acknowledged writes")
            node.kill(signal.SIGKILL)
            await node.process.wait()
            stop.set()
            await task
        node = await start_node(sock, env, name="n1")
        async with connect("writer", node.url, direct=False) as reader:
            final = await drive.read_back(reader, 20)
    finally:
        await node.stop()
    report = check_writes(history.events, final)
    assert not report.violations("acknowledged_write_durable"), report.explain(
        "acknowledged_write_durable"
    )
    assert report.counts["durable"] == 20
    print(f"node kill -9 under writes: {dict(report.counts)}")


def _acked(history: History, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return sum(1 for e in history.events if e.kind == "ok" and e.op == "write") >= n

    return check


async def test_acknowledged_state_writes_survive_redis_kill_9(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    """Guarantee: an acknowledged state write is durable (Redis backend, appendfsync always),
    across kill -9 of redis-server under the writes."""
    from state._redis_proc import RedisProcess

    redis = RedisProcess(tmp_path)
    redis.start()
    env = {**fabric_env, "FABRIC_STATE_BACKEND": "redis", "FABRIC_STATE_URL": redis.url}
    node = await start_node(tmp_path / "node.sock", env, name="n1")
    history = History()
    try:
        async with connect("writer", node.url, direct=False) as writer:
            stop = asyncio.Event()
            task = asyncio.ensure_future(drive.writes(writer, history, keys=20, until=stop))
            await until(_acked(history, 200), what="200 acknowledged writes")
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(0.3)  # writes meet the dead server
            await asyncio.to_thread(redis.start)
            await until(_acked(history, 300), what="writes acknowledged again")
            stop.set()
            await task
            final = await drive.read_back(writer, 20)
    finally:
        await node.stop()
        redis.stop()
    report = check_writes(history.events, final)
    assert not report.violations("acknowledged_write_durable"), report.explain(
        "acknowledged_write_durable"
    )
    print(f"redis kill -9: {dict(report.counts)}")


async def test_partition_between_cloud_nodes(mesh_nodes) -> None:
    """Guarantees across a cut cluster link, then healed: requests end in a reply or a typed
    error; pub/sub is at most once."""
    from mesh.conftest import free_port

    m = mesh_nodes
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    link = await DelayProxy(("127.0.0.1", int(m.cluster["c1"].rsplit(":", 1)[1])), 0.0).start()
    base = 'site = "cloud"\nmesh_heartbeat = 0.25\nmesh_dead_after = 1.0\n'
    history = History()
    try:
        await m.start("c1", base + f'cluster = "{m.cluster["c1"]}"\n')
        await m.start("c2", base + f'cluster = "{m.cluster["c2"]}"\nseeds = ["{link.url}"]\n')
        await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
        async with (
            connect("echo", m.url("c1")) as echo,
            connect("client", m.url("c2")) as client,
            connect("sub", m.url("c1")) as sub,
            connect("pub", m.url("c2")) as pub,
        ):

            async def answer(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await echo.serve("svc.echo", answer)
            await sub.subscribe("chaos.events", callback=drive.recorder(history, "sub"))
            await echo.flush()
            await sub.flush()
            stop = asyncio.Event()
            asker = asyncio.ensure_future(
                drive.requests(client, history, "svc.echo", until=stop, timeout=0.5)
            )
            sender = asyncio.ensure_future(
                drive.publishes(pub, history, "chaos.events", count=500, interval=0.005)
            )
            await asyncio.sleep(0.5)
            link.cut()
            await asyncio.sleep(1.5)
            link.heal()
            await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
            await until(_answers(client), what="requests answered after the heal")
            await asyncio.wait_for(sender, 60)
            stop.set()
            await asker
            await pub.flush()
            await sub.flush()
    finally:
        await link.aclose()
    requests = check_requests(history.events)
    assert not requests.violations("reply_or_typed_error"), requests.explain(
        "reply_or_typed_error"
    )
    messages = check_messages(history.events, ["sub"])
    assert not messages.violations("at_most_once"), messages.explain("at_most_once")
    print(f"partition: requests {dict(requests.counts)}, messages {dict(messages.counts)}")


async def test_migration_under_a_steady_stream_is_exactly_once_in_order(mesh_nodes) -> None:
    """Guarantee: an agent migrating between nodes under a steady stream gets every message
    once, in order."""
    from mesh.conftest import cloud_toml, free_port

    m = mesh_nodes
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster)) for n in ("c1", "c2")))
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
    history = History()
    async with (
        connect("mover", m.url("c1")) as mover,
        connect("producer", m.url("c2")) as producer,
    ):
        await mover.subscribe("agents.mover.inbox", callback=drive.recorder(history, "mover"))
        await mover.flush()
        sender = asyncio.ensure_future(
            drive.publishes(
                producer, history, "agents.mover.inbox", count=400, interval=0.003, op="send"
            )
        )
        await until(_received(history, 60), what="the stream flowing")
        report = await mover.migrate(m.url("c2"))
        assert report.node == "c2"
        await asyncio.wait_for(sender, 60)
        await producer.flush()
        await until(_received(history, 400), timeout=30, what="all 400 messages")
    result = check_stream(history.events, "producer", "mover")
    assert not result.violations("exactly_once_in_order"), result.explain(
        "exactly_once_in_order"
    )
    assert result.counts["delivered_once"] == 400
    print(f"migration under a stream: {dict(result.counts)}")


def _received(history: History, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return sum(1 for e in history.events if e.op == "receive") >= n

    return check

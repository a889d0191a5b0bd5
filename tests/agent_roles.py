"""Agent processes the integration tests start: ``python agent_roles.py ROLE URL [ARGS]``.

Each role prints ``ready`` once its subscriptions reached the node, and then one stdout line
per event the test may await.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdk import Agent, Msg, connect


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def serve_forever(agent: Agent) -> None:
    await agent.flush()
    say("ready", agent.name, os.getpid())
    await asyncio.Event().wait()


async def echo(url: str, name: str = "echo-1", queue: str = "echo") -> None:
    """svc.echo (queue group) echoes; svc.who answers the agent's name; svc.fail raises;
    svc.slow sleeps the number of seconds in the payload, then answers."""
    async with connect(name, url) as agent:

        async def echo_handler(msg: Msg) -> bytes:
            return bytes(msg.data)

        async def who(msg: Msg) -> str:
            return agent.name

        async def fail(msg: Msg) -> bytes:
            raise ValueError("the handler refused this input")

        async def slow(msg: Msg) -> str:
            await asyncio.sleep(float(msg.text()))
            return "slept"

        async def nested(msg: Msg) -> str:
            # The deadline inherited from msg must bound this inner request.
            left = msg.time_left()
            reply = await agent.request("svc.slow", b"30")
            return f"{left} {reply.text()}"

        await agent.serve("svc.echo", echo_handler, queue=queue)
        await agent.serve("svc.who", who, queue=queue)
        await agent.serve("svc.fail", fail, queue=queue)
        await agent.serve("svc.slow", slow, queue=queue)
        await agent.serve("svc.nested", nested, queue=queue)
        await serve_forever(agent)


async def reviewers(url: str, count: str, prefix: str, slow: str = "") -> None:
    """``count`` agents in this process, each answering review.essay with its name;
    names listed in ``slow`` (comma-separated) never answer."""
    never = set(filter(None, slow.split(",")))
    stack = contextlib.AsyncExitStack()  # keeps every agent open until the process ends
    for i in range(int(count)):
        name = f"{prefix}-{i}"
        agent = await stack.enter_async_context(connect(name, url))

        async def review(msg: Msg, me: str = name) -> str | None:
            if me in never:
                await asyncio.sleep(3600)
            return me

        await agent.serve("review.essay", review)
        await agent.flush()
    say("ready", prefix, os.getpid())
    await asyncio.Event().wait()


async def streamer(url: str) -> None:
    """llm.generate yields as many chunks as the payload says; it announces on
    events.stream when a generator was closed before its end (cancellation reached it)."""
    async with connect("streamer", url) as agent:

        async def generate(msg: Msg):  # type: ignore[no-untyped-def]
            total = int(msg.text())
            sent = 0
            try:
                for i in range(total):
                    yield f"tok{i}"
                    sent += 1
            finally:
                if sent < total:
                    await agent.publish("events.stream", f"cancelled after {sent}")
                    say("cancelled", sent)

        await agent.serve("llm.generate", generate)
        await serve_forever(agent)


async def stream_reader(url: str, count: str, window: str) -> None:
    """Opens a stream of ``count`` chunks on llm.generate, reads one, says so, then stalls
    (until it is killed: the responder must notice its reader went away)."""
    async with connect("stream-reader", url) as agent:
        stream = agent.stream("llm.generate", count, timeout=60, window=int(window))
        first = await stream.__anext__()
        say("reading", first.text())
        await serve_forever(agent)


async def subscriber(url: str, subject: str, queue: str = "") -> None:
    """Prints ``got <payload>`` for every message on ``subject``."""
    async with connect("subscriber", url) as agent:
        sub = await agent.subscribe(subject, queue=queue or None)
        await agent.flush()
        say("ready", os.getpid())
        async for msg in sub:
            say("got", msg.subject, msg.text())


async def publisher(url: str, subject: str, count: str) -> None:
    """Publishes ``count`` numbered messages, then prints ``done``."""
    async with connect("publisher", url) as agent:
        say("ready", os.getpid())
        for i in range(int(count)):
            await agent.publish(subject, str(i))
        await agent.flush()
        say("done", count)
        await asyncio.Event().wait()


async def state_writer(url: str, name: str, key: str, ttl: str) -> None:
    """Takes the lease on ``key``, prints ``leased TOKEN``, then writes ``key`` each time a
    line arrives on stdin and prints ``wrote VERSION`` or ``refused ERRORCODE``."""
    from fabric.errors import FabricError

    async with connect(name, url) as agent:
        lease = await agent.state.acquire(key, ttl=float(ttl))
        say("ready", os.getpid())
        say("leased", lease.token)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            try:
                version = await agent.state.put(key, line.strip())
                say("wrote", version)
            except FabricError as exc:
                say("refused", exc.code)


async def big_reader(url: str, name: str, subject: str, hold: str = "") -> None:
    """Prints ``read SHA256 SHARED`` for every message on ``subject``; releases each one,
    unless ``hold`` is set: then it keeps every message (and its slot) until killed."""
    import hashlib

    kept: list[Msg] = []
    async with connect(name, url) as agent:
        sub = await agent.subscribe(subject)
        await agent.flush()
        say("ready", os.getpid())
        async for msg in sub:
            digest = hashlib.sha256(msg.data).hexdigest()
            say("read", digest, msg.shared, len(msg.data))
            if hold:
                kept.append(msg)
            else:
                msg.release()


async def big_publisher(url: str, subject: str, size: str) -> None:
    """Publishes one ``size``-byte payload on ``subject`` (through shared memory), then prints
    ``stocked N`` once its pre-leased slots are in, then ``ready``, and waits to be killed."""
    async with connect("big-publisher", url) as agent:
        await agent.publish(subject, b"\x05" * int(size))
        shared = agent._core.shared
        await shared.refilled()
        say("stocked", shared.stash.held() if shared.stash is not None else 0)
        say("ready", os.getpid())
        await asyncio.Event().wait()


async def blob_holder(url: str, name: str) -> None:
    """Shares and opens state-tier blobs on command, one stdin line each, keeping every view:
    ``share SIZE SEED`` → ``shared REF``; ``open REF`` → ``opened SHA256 READONLY MAPPED NBYTES``
    (MAPPED: the view is a mapping of the node's sealed memfd, not bytes received);
    ``drop REF`` → ``dropped REF``; ``release`` → ``released N`` (every view let go);
    any refusal → ``refused ERRORCODE``."""
    import hashlib
    import random

    from fabric.errors import FabricError
    from fabric.shm import SealedMapping

    views: list[memoryview] = []
    async with connect(name, url) as agent:
        say("ready", os.getpid())
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            cmd, *args = line.split()
            try:
                if cmd == "share":
                    data = random.Random(int(args[1])).randbytes(int(args[0]))
                    say("shared", await agent.state.share(data))
                elif cmd == "open":
                    view = await agent.state.open_blob(args[0])
                    views.append(view)
                    mapped = isinstance(view.obj, SealedMapping)
                    digest = hashlib.sha256(view).hexdigest()
                    say("opened", digest, view.readonly, mapped, view.nbytes)
                elif cmd == "drop":
                    await agent.state.drop_blob(args[0])
                    say("dropped", args[0])
                elif cmd == "release":
                    for view in views:
                        view.release()
                    say("released", len(views))
                    views.clear()
            except FabricError as exc:
                say("refused", exc.code)


async def steady_publisher(url: str, subject: str, count: str, interval_ms: str) -> None:
    """Publishes ``count`` numbered messages, one every ``interval_ms``, then ``done``."""
    async with connect("steady", url) as agent:
        say("ready", os.getpid())
        for i in range(int(count)):
            await agent.publish(subject, str(i))
            await asyncio.sleep(float(interval_ms) / 1000)  # the rate, not a synchronisation
        await agent.flush()
        say("done", count)
        await asyncio.Event().wait()


async def chaos_subscriber(url: str, subject: str, history_file: str) -> None:
    """Records every delivery on ``subject`` (a numbered message) as a ``receive`` in the
    JSON-lines history ``history_file`` (tests/chaos/history.py)."""
    from chaos.history import History

    history = History(Path(history_file))
    async with connect("chaos-sub", url) as agent:
        sub = await agent.subscribe(subject)
        await agent.flush()
        say("ready", os.getpid())
        async for msg in sub:
            history.received(agent.name, "receive", int(msg.text()))



async def counter(url: str, subject: str) -> None:
    """Reads ``subject`` as fast as it can, counting deliveries and the losses ``SlowConsumer``
    reports; ``counter.report`` answers ``{"received": R, "lost": L}`` as JSON."""
    import json

    from sdk import SlowConsumer

    async with connect("counter", url) as agent:
        sub = await agent.subscribe(subject)
        counts = {"received": 0, "lost": 0, "reports": 0}

        async def report(msg: Msg) -> str:
            return json.dumps(counts)

        async def read() -> None:
            while True:
                try:
                    await sub.next()
                    counts["received"] += 1
                except SlowConsumer as exc:
                    counts["lost"] += exc.lost
                    counts["reports"] += 1

        reader = asyncio.ensure_future(read())
        await agent.serve("counter.report", report)
        try:
            await serve_forever(agent)
        finally:
            reader.cancel()


ROLES = {
    "chaos-subscriber": chaos_subscriber,
    "counter": counter,
    "steady-publisher": steady_publisher,
    "blob-holder": blob_holder,
    "big-reader": big_reader,
    "big-publisher": big_publisher,
    "state-writer": state_writer,
    "echo": echo,
    "reviewers": reviewers,
    "streamer": streamer,
    "stream-reader": stream_reader,
    "subscriber": subscriber,
    "publisher": publisher,
}

if __name__ == "__main__":
    import uvloop

    role, *args = sys.argv[1:]
    uvloop.install()
    asyncio.run(ROLES[role](*args))  # type: ignore[operator]

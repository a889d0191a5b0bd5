"""``fabric demo``: an embedded node and a handful of agents, every pattern in a minute."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

from rich.console import Console

from .config import NodeSettings
from .errors import NoResponders, Timeout
from .node import Node
from .runner import install_uvloop

__all__ = ["run_demo"]

console = Console()


def run_demo(url: str | None) -> None:
    """Run the demo against ``url``, or against a node embedded for the occasion."""
    install_uvloop()
    asyncio.run(_demo(url))


async def _demo(url: str | None) -> None:
    from sdk import Msg, connect

    async with AsyncExitStack() as stack:
        if url is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fabric-demo-"))
            node = Node(NodeSettings(name="demo", socket=Path(tmp) / "node.sock"))
            await node.start()
            stack.push_async_callback(node.aclose)
            url = node.endpoints[0]
            console.print(f"[bold]embedded node[/bold] listening on {url}")

        planner = await stack.enter_async_context(connect("planner", url))
        workers = [await stack.enter_async_context(connect(f"worker-{i}", url)) for i in range(3)]
        llm = await stack.enter_async_context(connect("llm", url))

        for w in workers:

            async def summarise(msg: Msg, me: str = w.name) -> str:
                return f"{me}: summary of {msg.text()!r}"

            async def review(msg: Msg, me: str = w.name) -> str:
                return f"{me} approves"

            await w.serve("tasks.summarise", summarise, queue="workers")
            await w.serve("review.essay", review)

        async def generate(msg: Msg) -> AsyncIterator[str]:
            for word in f"tokens streamed back for {msg.text()}".split():
                yield word + " "

        await llm.serve("llm.generate", generate)
        for agent in (*workers, llm):
            await agent.flush()

        console.rule("publish / subscribe")
        events = await planner.subscribe("events.*")
        await planner.flush()
        await workers[0].publish("events.done", b"worker-0 finished", headers={"job": "42"})
        msg = await events.next(timeout=5)
        console.print(f"planner got {msg.subject}: {msg.text()} headers={msg.headers}")

        console.rule("request / reply (queue group)")
        start = time.perf_counter()
        reply = await planner.request("tasks.summarise", b"chapter 1", timeout=2)
        console.print(f"{reply.text()}  [dim]({(time.perf_counter() - start) * 1e6:.0f} µs)[/dim]")
        shares: Counter[str] = Counter()
        for i in range(30):
            who = (await planner.request("tasks.summarise", f"c{i}")).text().split(":")[0]
            shares[who] += 1
        console.print(f"30 requests shared by the group: {dict(shares)}")

        console.rule("no responders, timeouts")
        try:
            await planner.request("tasks.translate", b"", timeout=2)
        except NoResponders as exc:
            console.print(f"NoResponders at once: {exc}")
        try:
            await planner.request("tasks.summarise", b"", timeout=0.000001)
        except Timeout as exc:
            console.print(f"Timeout: {exc}")

        console.rule("scatter-gather")
        replies = await planner.gather("review.essay", b"my essay", deadline=1.5)
        console.print(
            f"{len(replies)} of {replies.reached} reviewers answered "
            f"(complete={replies.complete}): {[m.text() for m in replies]}"
        )

        console.rule("map over the queue group")
        results = await planner.map("tasks.summarise", [f"doc {i}" for i in range(6)])
        for r in results:
            console.print(f"  {r.text() if isinstance(r, Msg) else r!r}")

        console.rule("streaming reply")
        text = "".join([c.text() async for c in planner.stream("llm.generate", b"the demo")])
        console.print(f"streamed: {text}")

        console.rule("node status")
        status = await planner.node_status()
        console.print(
            f"node {status['node']}: {len(status['sessions'])} sessions, "
            f"{status['stats']['frames_in']} frames in, {status['stats']['frames_out']} out"
        )

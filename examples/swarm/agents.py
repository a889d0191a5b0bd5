"""The swarm's agents: ``python examples/swarm/agents.py ROLE NODE_URL``.

Roles: ``llm`` (a streaming token generator behind A2A), ``reviewers`` (five A2A agents in one
process, members of the ``reviewers`` group; reviewer-4 is slow), ``tools`` (MCP tools, and an
MCP host for fabric clients), ``planner`` (A2A: fans a task out to the reviewers with a quorum of
3, calls a tool over MCP on the fabric, then streams the llm's summary). Each prints ``ready``
once it serves, and one line per notable event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from a2a.helpers import get_artifact_text
from a2a.types.a2a_pb2 import Role, SendMessageRequest
from mcp import Client
from pydantic import BaseModel, Field

from sdk import Agent, connect
from sdk.a2a import TextExecutor, agent_card, fabric_client, multicast, serve_a2a
from sdk.mcp import ToolCall, fabric_mcp_server, fabric_transport, serve_mcp, serve_tools, tool

VOCAB = [
    "the", "fabric", "carries", "agents", "fast", "and", "far", "tokens", "flow", "in", "order",
]
#: Seconds between two tokens of the llm (set SWARM_TOKEN_DELAY=0 to stream flat out).
TOKEN_DELAY = float(os.environ.get("SWARM_TOKEN_DELAY", "0.01"))


def say(*parts: object) -> None:
    print(*parts, flush=True)


def tokens_for(prompt: str) -> tuple[int, list[str]]:
    """A deterministic "model": ``tokens=N`` in the prompt sets the length (default 24)."""
    count = 24
    for word in prompt.split():
        if word.startswith("tokens="):
            count = max(0, min(100_000, int(word[7:] or 0)))
    seed = hashlib.sha256(prompt.encode()).digest()
    return count, [VOCAB[(seed[i % 32] + i) % len(VOCAB)] for i in range(count)]


async def llm(url: str) -> None:
    async with connect("llm", url) as agent:

        async def generate(prompt: str) -> AsyncIterator[str]:
            count, words = tokens_for(prompt)
            sent = 0
            try:
                for word in words:
                    if TOKEN_DELAY:
                        await asyncio.sleep(TOKEN_DELAY)
                    yield word + " "
                    sent += 1
            finally:
                if sent < count:
                    say("llm cancelled after", sent, "tokens of:", prompt[:60])

        card = agent_card("llm", "Streams a deterministic answer, token by token.",
                          skills=[("generate", "tokens=N sets the length")])
        await serve_a2a(agent, card, TextExecutor(generate))
        await serve_forever(agent)


async def reviewers(url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for i in range(5):
            name = f"reviewer-{i}"
            agent = await stack.enter_async_context(connect(name, url))

            async def review(text: str, me: str = name, slow: bool = i == 4) -> str:
                if slow:
                    await asyncio.sleep(5)  # past any planner deadline: shows the quorum
                score = hashlib.sha256(f"{me}:{text}".encode()).digest()[0] % 10
                return f"{me}: {'approve' if score >= 3 else 'revise'} ({score}/9)"

            card = agent_card(name, "Reviews a plan.", skills=[("review", "approve or revise")])
            await serve_a2a(agent, card, TextExecutor(review), groups=["reviewers"])
        say("ready reviewers", os.getpid())
        await asyncio.Event().wait()


class WordCount(BaseModel):
    text: str = Field(description="The text to count words in.", max_length=100_000)


class Add(BaseModel):
    a: int
    b: int


@tool("wordcount", "Count the words of a text.", WordCount)
async def wordcount(args: WordCount, call: ToolCall) -> dict[str, object]:
    return {"words": len(args.text.split()), "traceparent": call.traceparent}


@tool("add", "Add two integers.", Add)
async def add(args: Add, call: ToolCall) -> str:
    return str(args.a + args.b)


async def tools(url: str) -> None:
    async with connect("tools", url) as agent:
        await serve_tools(agent, wordcount, add)
        await serve_mcp(agent, fabric_mcp_server(agent), host="tools")
        await serve_forever(agent)


async def planner(url: str) -> None:
    async with connect("planner", url) as agent:

        async def plan(task: str) -> AsyncIterator[str]:
            votes = await multicast(agent, "reviewers", task, quorum=3, deadline=2.0)
            verdicts = []
            for reply in votes.replies:
                if reply.response is not None:
                    for artifact in reply.response.task.artifacts:
                        verdicts.append(get_artifact_text(artifact))
            yield f"reviews ({len(votes.replies)} of {votes.reached}): {'; '.join(verdicts)}\n"
            async with Client(fabric_transport(agent, "tools")) as mcp_client:
                counted = await mcp_client.call_tool("wordcount", {"text": task})
            yield f"words: {counted.structured_content}\n"
            llm_client = await fabric_client(agent, "llm")
            request = SendMessageRequest()
            request.message.role = Role.ROLE_USER
            request.message.message_id = os.urandom(8).hex()
            request.message.parts.add().text = f"summarise tokens=12 {task}"
            async for event in llm_client.send_message(request):
                if event.HasField("artifact_update"):
                    for part in event.artifact_update.artifact.parts:
                        if part.text:
                            yield part.text
            await llm_client.close()

        card = agent_card("planner", "Fans a task out to five reviewers (quorum 3), counts its "
                          "words with an MCP tool, and streams the llm's summary.",
                          skills=[("plan", "review and summarise a task")])
        await serve_a2a(agent, card, TextExecutor(plan))
        await serve_forever(agent)


async def serve_forever(agent: Agent) -> None:
    await agent.flush()
    say("ready", agent.name, os.getpid())
    await asyncio.Event().wait()


ROLES = {"llm": llm, "reviewers": reviewers, "tools": tools, "planner": planner}

if __name__ == "__main__":
    role, node_url = sys.argv[1:3]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(ROLES[role](node_url))

"""A2A over the fabric binding: the a2a-sdk client with the fabric transport, and multicast."""

from __future__ import annotations

import pytest
from a2a.client import A2AClientError
from a2a.helpers import get_artifact_text
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    TaskState,
)
from a2a.utils.errors import InternalError, TaskNotFoundError
from procs import until

from fabric.errors import NoResponders
from sdk import connect
from sdk.a2a import fabric_client, fetch_card, multicast

from .interop_support import Swarm, text_request

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.timeout(90)]



async def test_card_send_stream_get_cancel_over_the_fabric(swarm: Swarm) -> None:
    async with connect("a2a-tester", swarm.node.url) as agent:
        card = await fetch_card(agent, "llm")
        assert [i.protocol_binding for i in card.supported_interfaces] == ["FABRIC"]
        client = await fabric_client(agent, "llm")
        tokens = []
        async for event in client.send_message(text_request("fabric tokens=8")):
            if event.HasField("artifact_update"):
                tokens += [p.text for p in event.artifact_update.artifact.parts if p.text]
        assert len(tokens) == 8

        unary = await fabric_client(agent, "llm", streaming=False)
        events = [e async for e in unary.send_message(text_request("x tokens=4"))]
        assert len(get_artifact_text(events[-1].task.artifacts[0]).split()) == 4

        long_task = text_request("fabric-cancel tokens=5000", immediately=True)
        events = [e async for e in unary.send_message(long_task)]
        task_id = events[-1].task.id
        cancelled = await unary.cancel_task(CancelTaskRequest(id=task_id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        await swarm.agents["llm"].wait_line("tokens of: fabric-cancel")
        with pytest.raises(TaskNotFoundError):
            await unary.get_task(GetTaskRequest(id="missing"))


async def test_leaving_a_fabric_stream_cancels_the_task(swarm: Swarm) -> None:
    async with connect("a2a-leaver", swarm.node.url) as agent:
        client = await fabric_client(agent, "llm")
        task_id = ""
        seen = 0
        events = client.send_message(text_request("fabric-leave tokens=5000"))
        async for event in events:
            task_id = task_id or event.task.id or event.status_update.task_id
            seen += 1
            if seen == 4:
                break
        await events.aclose()  # type: ignore[attr-defined]
        await swarm.agents["llm"].wait_line("tokens of: fabric-leave")
        unary = await fabric_client(agent, "llm", streaming=False)
        task = await unary.get_task(GetTaskRequest(id=task_id))
        assert task.status.state == TaskState.TASK_STATE_CANCELED


async def test_multicast_is_a_gather_with_quorum_and_deadline(swarm: Swarm) -> None:
    async with connect("a2a-caster", swarm.node.url) as agent:
        everyone = await multicast(agent, "reviewers", "review this", deadline=3.0)
        assert everyone.reached == 5
        assert sorted(everyone.answered) == [f"reviewer-{i}" for i in range(4)]
        assert everyone.missing == 1  # reviewer-4 sleeps past the deadline
        quorum = await multicast(agent, "reviewers", "quick", quorum=2, deadline=3.0)
        assert len(quorum.replies) >= 2
        assert all(r.response is not None for r in quorum.replies)
        with pytest.raises(NoResponders):
            await multicast(agent, "nobody-here", "hello")


async def test_unknown_agent_over_the_fabric(swarm: Swarm) -> None:
    async with connect("a2a-lost", swarm.node.url) as agent:
        with pytest.raises(NoResponders):
            await fetch_card(agent, "nobody")
        card = await fetch_card(agent, "llm")
        card.supported_interfaces[0].url = "fabric:nobody"
        from a2a.client import ClientConfig, ClientFactory

        from sdk.a2a import register_fabric

        factory = ClientFactory(ClientConfig(supported_protocol_bindings=["FABRIC"]))
        register_fabric(factory, agent)
        client = factory.create(card)
        with pytest.raises(A2AClientError):
            async for _ in client.send_message(text_request("hi")):
                pass


async def test_a_blocking_send_past_its_deadline_cancels_the_task(swarm: Swarm) -> None:
    from a2a.client import A2AClientTimeoutError, ClientCallContext

    async with connect("a2a-deadline", swarm.node.url) as agent:
        client = await fabric_client(agent, "llm", streaming=False)
        # The caller's timeout (the agent waits a little past the deadline before it cancels,
        # so its -32603 comes late; accepted too, should a loaded machine reorder the two).
        with pytest.raises((A2AClientTimeoutError, InternalError)):
            async for _ in client.send_message(
                text_request("fabric-slow tokens=5000"), context=ClientCallContext(timeout=0.5)
            ):
                pass
        await swarm.agents["llm"].wait_line("tokens of: fabric-slow")
        events = [e async for e in client.send_message(text_request("after tokens=2"))]
        assert events[-1].task.status.state == TaskState.TASK_STATE_COMPLETED


async def test_a_large_message_over_the_fabric_binding(swarm: Swarm) -> None:
    # 512 KiB of text: above the shared-memory threshold (64 KiB), so the SDK writes the
    # JSON-RPC request once into the node's pool and only a descriptor travels (the pool's
    # gauges are back to zero by the time the reply is here, so this test checks the answer).
    async with connect("a2a-big", swarm.node.url) as agent:
        client = await fabric_client(agent, "llm", streaming=False)
        big = "tokens=3 " + "x" * (512 * 1024)
        events = [e async for e in client.send_message(text_request(big))]
        assert events[-1].task.status.state == TaskState.TASK_STATE_COMPLETED
        assert len(get_artifact_text(events[-1].task.artifacts[0]).split()) == 3

        async def released() -> bool:
            return (await agent.node_status())["pool"]["leases"] == 0

        await until(released, what="the shared-memory slot coming back")

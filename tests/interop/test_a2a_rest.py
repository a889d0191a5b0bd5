"""A2A's HTTP+JSON binding at the gateway, driven by a2a-sdk's REST client transport."""

from __future__ import annotations

import httpx
import pytest
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.helpers import get_artifact_text
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from .interop_support import Swarm, text_request

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.timeout(90)]



async def rest_client(gateway: str, name: str, *, streaming: bool = True) -> Client:
    config = ClientConfig(streaming=streaming, supported_protocol_bindings=["HTTP+JSON"])
    client = await ClientFactory(config).create_from_url(f"{gateway}/a2a/{name}/")
    assert type(client._transport).__name__ == "RestTransport"  # type: ignore[attr-defined]
    return client


async def test_rest_send_stream_get_cancel_list(gateway: str, swarm: Swarm) -> None:
    unary = await rest_client(gateway, "llm", streaming=False)
    streaming = await rest_client(gateway, "llm")
    try:
        events = [e async for e in unary.send_message(text_request("rest tokens=6"))]
        assert events[-1].task.status.state == TaskState.TASK_STATE_COMPLETED
        assert len(get_artifact_text(events[-1].task.artifacts[0]).split()) == 6

        tokens = []
        async for event in streaming.send_message(text_request("rest stream tokens=9")):
            if event.HasField("artifact_update"):
                tokens += [p.text for p in event.artifact_update.artifact.parts if p.text]
        assert len(tokens) == 9

        events = [
            e async for e in unary.send_message(
                text_request("rest-cancel tokens=5000", immediately=True)
            )
        ]
        task_id = events[-1].task.id
        assert (await unary.get_task(GetTaskRequest(id=task_id))).id == task_id
        cancelled = await unary.cancel_task(CancelTaskRequest(id=task_id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        await swarm.agents["llm"].wait_line("tokens of: rest-cancel")
        with pytest.raises(TaskNotCancelableError):
            await unary.cancel_task(CancelTaskRequest(id=task_id))
        with pytest.raises(TaskNotFoundError):
            await unary.get_task(GetTaskRequest(id="no-such-task"))
        listed = await unary.list_tasks(ListTasksRequest())
        assert task_id in [t.id for t in listed.tasks]
    finally:
        await unary.close()
        await streaming.close()


async def test_rest_bad_input(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        r = await http.post("/a2a/llm/message:send", content=b"{nope")
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
        r = await http.post("/a2a/llm/message:send", json={"message": {"parts": 7}})
        assert r.status_code == 400
        r = await http.post("/a2a/nobody/message:send", json={})
        assert r.status_code == 404
        r = await http.get("/a2a/llm/tasks/unknown-task")
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"

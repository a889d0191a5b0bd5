"""Serving an A2A agent on the fabric: its card and its JSON-RPC methods, with a2a-sdk's
request handler (tasks, states, cancel) behind them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from a2a.server.agent_execution import AgentExecutor
from a2a.server.context import ServerCallContext
from a2a.server.jsonrpc_models import InternalError
from a2a.server.request_handlers import DefaultRequestHandler, RequestHandler
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
)
from google.protobuf.json_format import MessageToDict

from sdk import Agent, Msg, Subscription

from ._dispatch import Call, RpcDispatcher, RpcFailure, error_response, parse_call
from ._protocol import FABRIC_BINDING, card_subject, fabric_url, group_subject, rpc_subject

__all__ = ["A2AService", "agent_card", "serve_a2a"]

log = logging.getLogger("sdk.a2a")

#: How long past a caller's deadline a blocking send waits before it cancels the task.
_DEADLINE_GRACE = 0.05
#: A2A protocol version this binding speaks.
PROTOCOL_VERSION = "1.0"


def agent_card(
    name: str,
    description: str,
    *,
    skills: Sequence[tuple[str, str]] = (),
    streaming: bool = True,
    version: str = "1.0.0",
) -> AgentCard:
    """A minimal Agent Card: text in, text out, ``skills`` as ``(id, description)`` pairs.
    Interfaces are filled in where the card is served (the fabric one by ``serve_a2a``, the
    HTTP one by the gateway)."""
    return AgentCard(
        name=name,
        description=description,
        version=version,
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        # A2A 1.0 requires at least one skill: an agent that names none offers itself as one.
        skills=[
            AgentSkill(id=sid, name=sid, description=text, tags=[sid])
            for sid, text in (skills or [(name, description)])
        ],
    )


class A2AService:
    """One agent's A2A face on the fabric; ``aclose()`` stops serving."""

    def __init__(
        self, agent: Agent, card: AgentCard, handler: RequestHandler, *, cancel_on_leave: bool
    ) -> None:
        self.agent = agent
        self.card = card
        self.dispatcher = RpcDispatcher(handler)
        self._cancel_on_leave = cancel_on_leave
        self._subs: list[Subscription] = []
        self._card_bytes: bytes | None = None
        #: Streams whose reader left before the task ended, whose task was then cancelled.
        self.abandoned = 0
        #: Blocking sends whose deadline passed, whose task was then cancelled.
        self.expired = 0

    def card_json(self) -> dict[str, Any]:
        return dict(MessageToDict(self.card))

    async def _on_card(self, msg: Msg) -> bytes:
        if self._card_bytes is None:
            self._card_bytes = json.dumps(self.card_json()).encode()
        return self._card_bytes

    def _on_rpc(self, msg: Msg) -> Any:
        try:
            call = parse_call(msg.data)
        except RpcFailure as failure:
            return self._reply(failure.response)
        if call.streaming:
            return self._stream(call)
        return self._unary(call, msg.time_left())

    async def _reply(self, response: dict[str, Any]) -> bytes:
        return self._encode(response)

    def _encode(self, response: dict[str, Any]) -> bytes:
        response["fabric"] = {"agent": self.agent.name}
        return json.dumps(response).encode()

    async def _unary(self, call: Call, left: float | None) -> bytes:
        if call.method != "SendMessage" or left is None:
            return self._encode(await self.dispatcher.call(call))
        work = asyncio.ensure_future(self.dispatcher.call(call))
        # A little past the deadline, so the caller's own timer has fired first: it sees its
        # Timeout (a gather counts this member missing), never a race with our late answer.
        done, _ = await asyncio.wait({work}, timeout=max(0.0, left) + _DEADLINE_GRACE)
        if work in done:
            return self._encode(work.result())
        # The caller's deadline passed: a blocking send's work stops with it. (a2a-sdk answers a
        # cancelled send with the task as it stands, so the cancel is ours to make; the handler
        # wrote the task id it made into the request.)
        self.expired += 1
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        task_id = call.params.message.task_id  # type: ignore[attr-defined]
        if task_id:
            await self._cancel(str(task_id))
        why = InternalError(message="the deadline passed; the task was cancelled")
        return self._encode(error_response(call.request_id, why))

    async def _stream(self, call: Call) -> AsyncIterator[bytes]:
        task_id = ""
        final = False
        try:
            async for response in self.dispatcher.stream(call):
                task_id = task_id or _task_id(response)
                final = _is_final(response)
                yield self._encode(response)
        finally:
            if not final and task_id and self._cancel_on_leave:
                # The reader left mid-stream (the fabric cancelled this generator): stop the
                # work it asked for instead of letting it run to its end unread.
                self.abandoned += 1
                await self._cancel(task_id)

    async def _cancel(self, task_id: str) -> None:
        handler = self.dispatcher.handler
        try:
            await handler.on_cancel_task(CancelTaskRequest(id=task_id), ServerCallContext())
        except Exception as exc:  # already terminal, or gone: nothing left to stop
            log.debug("cancelling abandoned task %s: %s", task_id, exc)

    async def aclose(self) -> None:
        """Stop serving (the agent stays connected)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.aclose()


def _task_id(response: dict[str, Any]) -> str:
    result = response.get("result")
    if not isinstance(result, dict):
        return ""
    for key in ("task", "statusUpdate", "artifactUpdate"):
        event = result.get(key)
        if isinstance(event, dict):
            found = event.get("id") or event.get("taskId")
            if found:
                return str(found)
    return ""


_TERMINAL = {
    "TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED",
    "TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED",
}


def _is_final(response: dict[str, Any]) -> bool:
    """Whether a stream may end after this response (an error, a message, a final state)."""
    result = response.get("result")
    if not isinstance(result, dict) or "message" in result:
        return True
    for key in ("task", "statusUpdate"):
        event = result.get(key)
        if isinstance(event, dict) and event.get("status", {}).get("state") in _TERMINAL:
            return True
    return False


def with_fabric_interface(card: AgentCard, name: str) -> AgentCard:
    """``card`` with the fabric interface listed in ``supportedInterfaces`` (once)."""
    out = AgentCard()
    out.CopyFrom(card)
    url = fabric_url(name)
    if not any(i.protocol_binding == FABRIC_BINDING for i in out.supported_interfaces):
        out.supported_interfaces.append(
            AgentInterface(url=url, protocol_binding=FABRIC_BINDING, protocol_version="1.0")
        )
    return out


async def serve_a2a(
    agent: Agent,
    card: AgentCard,
    executor: AgentExecutor,
    *,
    groups: Sequence[str] = (),
    task_store: TaskStore | None = None,
    cancel_on_leave: bool = True,
) -> A2AService:
    """Make ``agent`` an A2A agent: its card on ``a2a.NAME.card``, JSON-RPC on ``a2a.NAME.rpc``
    (and on ``a2a.group.G.rpc`` for each of ``groups``), run by a2a-sdk's request handler
    around ``executor``. The gateway then serves it at ``/a2a/NAME/``.

    ``cancel_on_leave``: a streaming reader that leaves before the task ended (an HTTP client
    that disconnects, a fabric reader that stops iterating) cancels the task.

    Raises:
        InvalidSubject: the agent's name or a group is not usable in a subject.
        ConnectionLost: the node cannot be reached.
    """
    card = with_fabric_interface(card, agent.name)
    if not card.name:
        card.name = agent.name
    handler = DefaultRequestHandler(
        agent_executor=executor, task_store=task_store or InMemoryTaskStore(), agent_card=card
    )
    service = A2AService(agent, card, handler, cancel_on_leave=cancel_on_leave)
    service._subs.append(await agent.serve(card_subject(agent.name), service._on_card))
    for subject in [rpc_subject(agent.name), *(group_subject(g) for g in groups)]:
        service._subs.append(await agent.serve(subject, service._on_rpc))
    await agent.flush()
    return service

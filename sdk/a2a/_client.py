"""A2A clients over the fabric: a transport for a2a-sdk's ``ClientFactory`` and a multicast
send that is one fabric ``gather``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from a2a.client import (
    A2AClientError,
    A2AClientTimeoutError,
    Client,
    ClientCallContext,
    ClientConfig,
    ClientFactory,
)
from a2a.client.transports.jsonrpc import JsonRpcTransport
from a2a.helpers import new_text_message
from a2a.types.a2a_pb2 import (
    AgentCard,
    Message,
    Role,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
)
from a2a.utils.proto_utils import parse_lenient
from google.protobuf.json_format import MessageToDict, ParseDict

from fabric.errors import FabricError, NoResponders, Timeout
from sdk import Agent

from ._protocol import FABRIC_BINDING, card_subject, group_subject, name_from_url, rpc_subject

__all__ = [
    "FabricTransport",
    "MulticastReply",
    "MulticastResult",
    "fabric_client",
    "fetch_card",
    "multicast",
    "register_fabric",
]


def _client_error(exc: FabricError) -> A2AClientError:
    """A fabric error as the a2a-sdk client error a caller of an A2A client catches."""
    if isinstance(exc, Timeout):
        return A2AClientTimeoutError(f"fabric: {exc}")
    if isinstance(exc, NoResponders):
        return A2AClientError(f"fabric: no A2A agent answers on {exc.subject}")
    return A2AClientError(f"fabric: {exc.code}: {exc}")


def _decode(data: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except ValueError as exc:
        raise A2AClientError(f"fabric: the agent sent invalid JSON: {exc}") from None


class FabricTransport(JsonRpcTransport):
    """a2a-sdk's JSON-RPC transport with the fabric in place of HTTP.

    The fabric binding carries the same JSON-RPC objects, so request building, response checks
    and the error-code mapping are a2a-sdk's own (inherited); only the two send paths differ:
    a fabric request for unary methods, a fabric stream for streaming ones.
    """

    def __init__(
        self, agent: Agent, card: AgentCard, url: str, *, timeout: float | None = None
    ) -> None:
        # No super().__init__: it wants an httpx client, and nothing here speaks HTTP.
        self.url = url
        self.agent_card = card
        self.httpx_client = None  # type: ignore[assignment]
        self.is_shared_httpx = True
        self._agent = agent
        self._subject = rpc_subject(name_from_url(url))
        self._timeout = timeout

    def _wait(self, context: ClientCallContext | None) -> float | None:
        if context is not None and context.timeout is not None:
            return context.timeout
        return self._timeout

    async def _send_request(
        self, payload: dict[str, Any], context: ClientCallContext | None = None
    ) -> dict[str, Any]:
        try:
            reply = await self._agent.request(
                self._subject, json.dumps(payload), timeout=self._wait(context)
            )
        except FabricError as exc:
            raise _client_error(exc) from exc
        return self._check_jsonrpc_response(_decode(reply.data))

    async def _send_stream_request(
        self, payload: dict[str, Any], context: ClientCallContext | None = None
    ) -> AsyncGenerator[StreamResponse]:
        stream = self._agent.stream(
            self._subject, json.dumps(payload), timeout=self._wait(context)
        )
        try:
            async for chunk in stream:
                checked = self._check_jsonrpc_response(_decode(chunk.data))
                yield parse_lenient(checked["result"], StreamResponse())
        except FabricError as exc:
            raise _client_error(exc) from exc
        finally:
            await stream.aclose()  # leaving early cancels the responder's stream

    async def close(self) -> None:
        """Nothing to close: the agent's connection is the caller's."""


def register_fabric(factory: ClientFactory, agent: Agent, *, timeout: float | None = None) -> None:
    """Let ``factory`` build clients for cards that list the ``FABRIC`` binding; their calls
    go through ``agent``. Put ``"FABRIC"`` in ``ClientConfig.supported_protocol_bindings``."""

    def produce(card: AgentCard, url: str, config: ClientConfig) -> FabricTransport:
        return FabricTransport(agent, card, url, timeout=timeout)

    factory.register(FABRIC_BINDING, produce)


async def fetch_card(agent: Agent, name: str, *, timeout: float | None = None) -> AgentCard:
    """Agent ``name``'s card, asked over the fabric.

    Raises:
        NoResponders: no A2A agent of that name. Timeout. InvalidSubject: bad name.
        A2AClientError: the card does not parse.
    """
    reply = await agent.request(card_subject(name), b"", timeout=timeout)
    try:
        card: AgentCard = ParseDict(_decode(reply.data), AgentCard(), ignore_unknown_fields=True)
    except Exception as exc:
        raise A2AClientError(f"fabric: {name}'s card does not parse: {exc}") from None
    return card


async def fabric_client(
    agent: Agent, name: str, *, streaming: bool = True, timeout: float | None = None
) -> Client:
    """An a2a-sdk ``Client`` for agent ``name`` that talks over the fabric (no HTTP).

    Raises:
        NoResponders, Timeout: from fetching the card. ValueError: the card lists no
            fabric interface.
    """
    card = await fetch_card(agent, name, timeout=timeout)
    factory = ClientFactory(
        ClientConfig(streaming=streaming, supported_protocol_bindings=[FABRIC_BINDING])
    )
    register_fabric(factory, agent, timeout=timeout)
    return factory.create(card)


@dataclass(slots=True)
class MulticastReply:
    """One member's answer to a multicast send."""

    #: The agent that answered.
    agent: str
    response: SendMessageResponse | None = None
    #: JSON-RPC error object (``code``, ``message``) when the member failed the call.
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class MulticastResult:
    """What a multicast gathered by its quorum or deadline."""

    replies: list[MulticastReply] = field(default_factory=list)
    #: How many members the message reached (None if the node did not say).
    reached: int | None = None
    #: Members reached that had not answered when the multicast returned.
    missing: int = 0

    @property
    def answered(self) -> list[str]:
        return [r.agent for r in self.replies]


def _as_message(message: Message | str) -> Message:
    if isinstance(message, str):
        return new_text_message(message, role=Role.ROLE_USER)
    return message


async def multicast(
    agent: Agent,
    group: str,
    message: Message | str,
    *,
    quorum: int | None = None,
    deadline: float = 1.5,
) -> MulticastResult:
    """Send one A2A ``SendMessage`` to every member of ``group`` and gather the answers: as
    soon as ``quorum`` answered, or all reached did, or at ``deadline`` seconds with what came.

    Raises:
        NoResponders: no member serves the group. InvalidSubject: bad group name.
    """
    body = {
        "jsonrpc": "2.0",
        "id": str(uuid.uuid4()),
        "method": "SendMessage",
        "params": MessageToDict(SendMessageRequest(message=_as_message(message))),
    }
    gathered = await agent.gather(
        group_subject(group), json.dumps(body), quorum=quorum, deadline=deadline
    )
    result = MulticastResult(reached=gathered.reached, missing=gathered.missing)
    for msg in gathered:
        try:
            data = json.loads(bytes(msg.data))
            name = str(data.get("fabric", {}).get("agent", ""))
        except (ValueError, AttributeError):
            continue  # a member that answers garbage is not counted as an answer
        if isinstance(data.get("error"), dict):
            result.replies.append(MulticastReply(name, error=data["error"]))
        else:
            response = parse_lenient(data.get("result", {}), SendMessageResponse())
            result.replies.append(MulticastReply(name, response=response))
    return result

"""A2A (Agent2Agent, spec 1.0) on the fabric, with the official ``a2a-sdk``.

    from sdk.a2a import TextExecutor, agent_card, serve_a2a

    async with connect("llm") as agent:
        await serve_a2a(agent, agent_card("llm", "Streams tokens"), TextExecutor(generate))

The gateway then serves the agent at ``/a2a/llm/`` (JSON-RPC + SSE) with its card at
``/a2a/llm/.well-known/agent-card.json``; other agents reach it over the fabric with
``fabric_client`` (an a2a-sdk client whose transport is the fabric) and ``multicast``.

Needs the ``[agents]`` extra; ``import sdk`` never imports this package.
"""

from ._client import (
    FabricTransport,
    MulticastReply,
    MulticastResult,
    fabric_client,
    fetch_card,
    multicast,
    register_fabric,
)
from ._dispatch import Call, RpcDispatcher, RpcFailure, error_response, parse_call
from ._executors import TextExecutor, TextFn
from ._protocol import (
    FABRIC_BINDING,
    STREAMING_METHODS,
    card_subject,
    fabric_url,
    group_subject,
    name_from_url,
    rpc_subject,
)
from ._server import A2AService, agent_card, serve_a2a

__all__ = [
    "FABRIC_BINDING",
    "STREAMING_METHODS",
    "A2AService",
    "Call",
    "FabricTransport",
    "MulticastReply",
    "MulticastResult",
    "RpcDispatcher",
    "RpcFailure",
    "TextExecutor",
    "TextFn",
    "agent_card",
    "card_subject",
    "error_response",
    "fabric_client",
    "fabric_url",
    "fetch_card",
    "group_subject",
    "multicast",
    "name_from_url",
    "parse_call",
    "register_fabric",
    "rpc_subject",
    "serve_a2a",
]

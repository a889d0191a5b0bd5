"""The Agent Fabric SDK: what an agent embeds.

    from sdk import connect

    async with connect("planner") as agent:
        reply = await agent.request("svc.echo", b"hi", timeout=1.0)

Needs only pyzmq, msgpack and pydantic.
"""

from fabric.errors import (
    Cancelled,
    ConnectionLost,
    FabricError,
    InvalidSubject,
    NoResponders,
    NotAuthorized,
    PayloadTooLarge,
    PayloadValidationError,
    RemoteError,
    SlowConsumer,
    Timeout,
)

from ._agent import Agent, AgentStats, connect
from ._msg import Msg
from ._replies import GatherResult
from ._stream import StreamReply
from ._subscription import Subscription

__all__ = [
    "Agent",
    "AgentStats",
    "Cancelled",
    "ConnectionLost",
    "FabricError",
    "GatherResult",
    "InvalidSubject",
    "Msg",
    "NoResponders",
    "NotAuthorized",
    "PayloadTooLarge",
    "PayloadValidationError",
    "RemoteError",
    "SlowConsumer",
    "StreamReply",
    "Subscription",
    "Timeout",
    "connect",
]

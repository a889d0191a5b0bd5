"""The Agent Fabric SDK: what an agent embeds.

    from sdk import connect

    async with connect("planner") as agent:
        reply = await agent.request("svc.echo", b"hi", timeout=1.0)

Needs only pyzmq, msgpack and pydantic.
"""

from fabric.errors import (
    Cancelled,
    Conflict,
    ConnectionLost,
    FabricError,
    Fenced,
    InvalidSubject,
    LeaseExpired,
    LeaseHeld,
    NoResponders,
    NotAuthorized,
    NotFound,
    PayloadTooLarge,
    PayloadValidationError,
    RemoteError,
    SlowConsumer,
    Timeout,
)

from ._agent import Agent, AgentStats, connect
from ._msg import Msg, Sender
from ._replies import GatherResult
from ._state import Lease, StateClient, StateStats
from ._stream import StreamReply
from ._subscription import Subscription

__all__ = [
    "Agent",
    "AgentStats",
    "Cancelled",
    "Conflict",
    "ConnectionLost",
    "FabricError",
    "Fenced",
    "GatherResult",
    "InvalidSubject",
    "Lease",
    "LeaseExpired",
    "LeaseHeld",
    "Msg",
    "NoResponders",
    "NotAuthorized",
    "NotFound",
    "PayloadTooLarge",
    "PayloadValidationError",
    "RemoteError",
    "Sender",
    "SlowConsumer",
    "StateClient",
    "StateStats",
    "StreamReply",
    "Subscription",
    "Timeout",
    "connect",
]

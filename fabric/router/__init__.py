"""The router: a pure core that decides where every message goes and who answers STATUS.

The node (agents) and the mesh (peers) are its drivers: they feed it subscriptions, peer
events and messages, each with ``now``, and carry out the actions it returns. See
``_router.py`` for the rules and docs/architecture.md for the layers.
"""

from ._actions import (
    Action,
    Answer,
    Behind,
    Count,
    Forward,
    Invalidate,
    Origin,
    Payload,
    PeerOrigin,
    Replay,
    Routing,
)
from ._interest import Delta, InterestKey, Labels, MeshInterest, RemoteEntry
from ._plan import PREFER_HEADER, GroupKey, decode_groups, decode_prefer, encode_groups
from ._router import Router, role_for
from ._strategy import PeerKind, Role, Strategy, strategy_for
from ._tally import Tally, TallyBook

__all__ = [
    "PREFER_HEADER",
    "Action",
    "Answer",
    "Behind",
    "Count",
    "Delta",
    "Forward",
    "GroupKey",
    "InterestKey",
    "Invalidate",
    "Labels",
    "MeshInterest",
    "Origin",
    "Payload",
    "PeerKind",
    "PeerOrigin",
    "RemoteEntry",
    "Replay",
    "Role",
    "Router",
    "Routing",
    "Strategy",
    "Tally",
    "TallyBook",
    "decode_groups",
    "decode_prefer",
    "encode_groups",
    "role_for",
    "strategy_for",
]

"""The broker mesh: cloud nodes in a full-mesh cluster, edge nodes attached as leaves.

Peer links run over ZeroMQ (CurveZMQ when keys are configured); nodes announce interest to
each other and forward only where it exists, under rules that make loops impossible
(``_strategy``). See docs/mesh.md.
"""

from ..router._interest import Delta, InterestKey, MeshInterest, RemoteEntry
from ..router._plan import (
    PREFER_HEADER,
    Plan,
    decode_groups,
    decode_prefer,
    encode_groups,
    plan_route,
)
from ..router._strategy import PeerKind, Role, Strategy, strategy_for
from ..router._tally import Tally, TallyBook
from ._links import CurveKeys
from ._mesh import Mesh, PeerOrigin, parse_peer_url, start_mesh
from ._peer import LinkState, PeerLinkState

__all__ = [
    "PREFER_HEADER",
    "CurveKeys",
    "Delta",
    "InterestKey",
    "LinkState",
    "Mesh",
    "MeshInterest",
    "PeerKind",
    "PeerLinkState",
    "PeerOrigin",
    "Plan",
    "RemoteEntry",
    "Role",
    "Strategy",
    "Tally",
    "TallyBook",
    "decode_groups",
    "decode_prefer",
    "encode_groups",
    "parse_peer_url",
    "plan_route",
    "start_mesh",
    "strategy_for",
]

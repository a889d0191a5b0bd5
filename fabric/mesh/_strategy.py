"""Moved to ``fabric.router._strategy`` (the router owns it); kept so old imports work."""

from ..router._strategy import (
    LOCAL,
    PeerKind,
    Role,
    Strategy,
    strategy_for,
)

__all__ = [
    "LOCAL",
    "PeerKind",
    "Role",
    "Strategy",
    "strategy_for",
]

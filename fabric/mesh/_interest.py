"""Moved to ``fabric.router._interest`` (the router owns it); kept so old imports work."""

from ..router._interest import (
    Delta,
    InterestKey,
    Labels,
    MeshInterest,
    RemoteEntry,
)

__all__ = [
    "Delta",
    "InterestKey",
    "Labels",
    "MeshInterest",
    "RemoteEntry",
]

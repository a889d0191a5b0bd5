"""Moved to ``fabric.router._settle`` (the router owns it); kept so old imports work."""

from ..router._settle import (
    SettleBook,
)

__all__ = [
    "SettleBook",
]

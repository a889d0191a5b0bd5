"""Moved to ``fabric.router._tally`` (the router owns it); kept so old imports work."""

from ..router._tally import (
    MAX_NAMES,
    Tally,
    TallyBook,
)

__all__ = [
    "MAX_NAMES",
    "Tally",
    "TallyBook",
]

"""Moved to ``fabric.router._plan`` (the router owns it); kept so old imports work."""

from ..router._plan import (
    PREFER_HEADER,
    GroupKey,
    Plan,
    decode_groups,
    decode_prefer,
    encode_groups,
    mismatch,
    plan_route,
)

__all__ = [
    "PREFER_HEADER",
    "GroupKey",
    "Plan",
    "decode_groups",
    "decode_prefer",
    "encode_groups",
    "mismatch",
    "plan_route",
]

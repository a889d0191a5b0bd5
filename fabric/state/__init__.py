"""The pooled memory tier: private versioned state under fenced leases, shared immutable blobs.

``StateStore`` and ``LeaseTable`` hold the rules (pure, no I/O, driven by ``now``);
``EmbeddedBackend`` hosts them in the node; ``RedisBackend`` implements the same rules with Lua
scripts on Redis / Valkey. Both satisfy ``StateBackend``. See docs/state.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import StateBackend
from ._embedded import EmbeddedBackend
from ._handover import HandoverStats, StateHandover, handover_for
from ._lease import LeaseTable
from ._service import STATE_PREFIX, StateService
from ._store import StateStore, blob_ref
from ._types import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    MAX_KEY_CHARS,
    BytesLike,
    HolderDropped,
    Lease,
    StateStats,
)

if TYPE_CHECKING:
    from ..config import NodeSettings
    from ._redis import RedisBackend

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_CHARS",
    "STATE_PREFIX",
    "BytesLike",
    "EmbeddedBackend",
    "HandoverStats",
    "HolderDropped",
    "Lease",
    "LeaseTable",
    "RedisBackend",
    "StateBackend",
    "StateHandover",
    "StateService",
    "StateStats",
    "StateStore",
    "blob_ref",
    "handover_for",
    "make_state_backend",
]


def __getattr__(name: str) -> object:
    # RedisBackend needs the [redis] extra; import it lazily so the embedded tier does not.
    if name == "RedisBackend":
        from ._redis import RedisBackend

        return RedisBackend
    raise AttributeError(name)


def make_state_backend(settings: NodeSettings) -> StateBackend:
    """The backend a node's settings ask for.

    Raises:
        ConfigError: Redis asked for without the ``[redis]`` extra installed.
        BackendUnavailable: the embedded state file cannot be opened or read.
    """
    if settings.state_backend == "embedded":
        if settings.state_durability == "memory":
            return EmbeddedBackend()
        path = settings.embedded_state_path()
        return EmbeddedBackend(path=path, sync=settings.state_durability)
    try:
        from ._redis import RedisBackend
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("state_backend=redis needs: pip install 'agent-fabric[redis]'") from None
    return RedisBackend.from_url(settings.state_url, namespace=settings.state_namespace)

"""Zero-copy shared memory for agents on one host.

The node owns the pool: sealed memfd segments (``create_segment``) cut into size classes
(``PoolSettings``, ``PoolLayout``), with leases kept by the pure ``SlotPool`` (or ``PoolGate``
around it, for waiting allocations). Agents receive the segment fds once (``send_fds`` /
``recv_fds``), map them (``SharedRegion.attach``), write a payload once into a leased slot and
read payloads of others in place. Only a ``Descriptor`` (36 bytes) travels through the node.
Immutable shared blobs of the state tier are sealed memfds of their own (``create_blob``,
``SealedMapping``), passed over the same pool socket (``BlobHost``).
See docs/shared-memory.md.
"""

from ._batch import MAX_BATCH, ReleaseBatcher, decode_release_batch, encode_release_batch
from ._descriptor import DESCRIPTOR_SIZE, Descriptor, validate_for_segment
from ._gate import PoolGate
from ._layout import PoolLayout, Slot, SlotRun
from ._memfd import (
    BLOB_SEALS,
    REQUIRED_SEALS,
    SealedMapping,
    create_blob,
    create_segment,
    map_segment,
    recv_fds,
    recv_fds_async,
    send_fds,
    send_fds_async,
    verify_blob,
    verify_segment,
)
from ._pool import ClassStats, PoolStats, SlotPool, SlotState
from ._region import SharedRegion
from ._service import BlobHost, PoolHandler, PoolService, SharedDelivery
from ._settings import PAGE, PoolSettings, SlotClassSpec
from ._stash import SlotStash

__all__ = [
    "BLOB_SEALS",
    "DESCRIPTOR_SIZE",
    "MAX_BATCH",
    "PAGE",
    "REQUIRED_SEALS",
    "BlobHost",
    "ClassStats",
    "Descriptor",
    "PoolGate",
    "PoolHandler",
    "PoolLayout",
    "PoolService",
    "PoolSettings",
    "PoolStats",
    "ReleaseBatcher",
    "SealedMapping",
    "SharedDelivery",
    "SharedRegion",
    "Slot",
    "SlotClassSpec",
    "SlotPool",
    "SlotRun",
    "SlotStash",
    "SlotState",
    "create_blob",
    "create_segment",
    "decode_release_batch",
    "encode_release_batch",
    "map_segment",
    "recv_fds",
    "recv_fds_async",
    "send_fds",
    "send_fds_async",
    "validate_for_segment",
    "verify_blob",
    "verify_segment",
]

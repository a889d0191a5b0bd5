"""Hypothesis, differential: any sequence of operations gives the same answers (values,
versions, tokens, errors, stats) on the embedded backend and on a real redis-server.

Leases here are long (no expiry mid-example); expiry is covered by test_conformance.py on
both backends and by test_properties.py against a model with a fake clock.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.state import EmbeddedBackend, Lease, RedisBackend, StateBackend, blob_ref

from ._redis_proc import RedisProcess

pytestmark = pytest.mark.timeout(300)

_KEYS = st.sampled_from(["a", "b", "c}"])
_NAMES = st.sampled_from(["x", "y"])
_BLOBS = st.sampled_from([b"", b"one", b"two" * 100])
_SMALL = st.one_of(st.none(), st.integers(min_value=0, max_value=4))

_OPS = st.one_of(
    st.tuples(st.just("put"), _KEYS, _SMALL, st.one_of(st.none(), st.integers(0, 5))),
    st.tuples(st.just("put_leased"), st.integers(0, 7), _SMALL),
    st.tuples(st.just("get"), _KEYS),
    st.tuples(st.just("delete"), _KEYS, _SMALL),
    st.tuples(st.just("acquire"), _KEYS, _NAMES),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("renew"), st.integers(0, 7)),
    st.tuples(st.just("share"), _BLOBS, _NAMES),
    st.tuples(st.just("open"), _BLOBS, _NAMES),
    st.tuples(st.just("drop"), _BLOBS, _NAMES),
    st.tuples(st.just("drop_holder"), _NAMES),
    st.tuples(st.just("stats")),
)


async def _apply(b: StateBackend, op: tuple[Any, ...], leases: list[Lease]) -> Any:
    name = op[0]
    if name == "put":
        return await b.put(op[1], b"v", expect=op[2], token=op[3])
    if name == "put_leased":
        if not leases:
            return None
        lease = leases[op[1] % len(leases)]
        return await b.put(lease.key, b"w", expect=op[2], token=lease.token)
    if name == "get":
        value, version = await b.get(op[1])
        return bytes(value), version
    if name == "delete":
        return await b.delete(op[1], expect=op[2])
    if name == "acquire":
        lease = await b.acquire(op[1], op[2], 600.0)
        leases.append(lease)
        return lease.token
    if name in ("release", "renew"):
        if not leases:
            return None
        lease = leases[op[1] % len(leases)]
        if name == "release":
            return await b.release(lease)
        return (await b.renew(lease, 600.0)).token
    if name == "share":
        return await b.share(op[1], op[2])
    if name == "open":
        return bytes(await b.open_blob(blob_ref(op[1]), op[2]))
    if name == "drop":
        return await b.drop_blob(blob_ref(op[1]), op[2])
    if name == "drop_holder":
        return await b.drop_holder(op[1])
    return await b.stats()


async def _run(b: StateBackend, ops: list[tuple[Any, ...]]) -> list[Any]:
    leases: list[Lease] = []
    outcomes: list[Any] = []
    try:
        for op in ops:
            try:
                outcomes.append(await _apply(b, op, leases))
            except FabricError as exc:
                outcomes.append(type(exc).__name__)
    finally:
        await b.aclose()
    return outcomes


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_OPS, max_size=30))
def test_backends_agree(redis_server: RedisProcess, ops: list[tuple[Any, ...]]) -> None:
    embedded = asyncio.run(_run(EmbeddedBackend(), ops))
    on_redis = RedisBackend.from_url(redis_server.url, namespace=f"d-{uuid.uuid4().hex[:12]}")
    assert asyncio.run(_run(on_redis, ops)) == embedded

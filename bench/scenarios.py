"""The built-in scenarios. Each is measured for every selected system in the same run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench._harness import ScenarioContext
from bench._payloads import BIG_SIZE, map_tasks, pattern, size_label
from bench._plan import BIG_AGENTS, FAN_CHILDREN
from bench._scenario import Scenario, registry, scenario

__all__ = ["RR_SIZES", "registered"]

RR_SIZES: tuple[int, ...] = (64, 4096, 1 << 20)
MAP_TASKS = 64
MAP_CONCURRENCY = 16
STREAM_CHUNKS = 2000
STREAM_CHUNK_SIZE = 32
THROUGHPUT_SIZE = 64
THROUGHPUT_COUNT = 300_000


def _equals(expected: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return bool(value == expected)

    return check


@scenario(
    "rr",
    roles=("echo",),
    summary="request/reply between two agent processes, one in flight (64 B, 4 KiB, 1 MiB)",
    cases=len(RR_SIZES),
)
async def rr(ctx: ScenarioContext) -> None:
    for size in RR_SIZES:
        payload = pattern(size)
        count, warmup = (4000, 300) if size <= 4096 else (400, 20)
        await ctx.latency_case(
            f"rr/{size_label(size)}",
            ctx.profile.params(count, warmup),
            ctx.client.request,
            payload,
            check=_equals(size),
        )


@scenario(
    "fanout",
    roles=("fan",),
    summary=f"one request to {FAN_CHILDREN} children over 2 processes, wait for every reply",
)
async def fanout(ctx: ScenarioContext) -> None:
    await ctx.latency_case(
        f"fanout/{FAN_CHILDREN}",
        ctx.profile.params(1500, 100),
        ctx.client.fanout,
        pattern(64),
        check=lambda n: n == FAN_CHILDREN,
    )


@scenario(
    "map",
    roles=("map",),
    summary=f"{MAP_TASKS} distinct tasks over 8 workers, results in input order",
)
async def map_(ctx: ScenarioContext) -> None:
    tasks = map_tasks(MAP_TASKS)
    expected = [b"done:" + t for t in tasks]
    await ctx.latency_case(
        f"map/{MAP_TASKS}x8",
        ctx.profile.params(300, 20),
        ctx.client.map,
        tasks,
        MAP_CONCURRENCY,
        check=lambda results: [bytes(r) for r in results] == expected,
    )


@scenario(
    "bigfan",
    roles=("big",),
    summary=f"{size_label(BIG_SIZE)} to {BIG_AGENTS} local agents, every copy checked",
)
async def bigfan(ctx: ScenarioContext) -> None:
    await ctx.latency_case(
        f"bigfan/{size_label(BIG_SIZE)}x{BIG_AGENTS}",
        ctx.profile.params(60, 3),
        ctx.client.bigfan,
        pattern(BIG_SIZE),
        check=lambda n: n == BIG_AGENTS,
    )


@scenario(
    "stream",
    roles=("stream",),
    summary=f"{STREAM_CHUNKS} chunks of {STREAM_CHUNK_SIZE} B streamed from a responder",
)
async def stream(ctx: ScenarioContext) -> None:
    await ctx.latency_case(
        f"stream/{STREAM_CHUNKS}",
        ctx.profile.params(100, 5),
        ctx.client.stream,
        STREAM_CHUNKS,
        STREAM_CHUNK_SIZE,
        check=lambda n: n == STREAM_CHUNKS * STREAM_CHUNK_SIZE,
    )


@scenario(
    "throughput",
    roles=("sink",),
    summary=f"one-way {THROUGHPUT_SIZE} B messages per second to one receiver process",
)
async def throughput(ctx: ScenarioContext) -> None:
    params = ctx.profile.params(THROUGHPUT_COUNT, 1)
    await ctx.rate_case(
        f"throughput/{THROUGHPUT_SIZE}B",
        params,
        ctx.client.throughput,
        params.count,
        THROUGHPUT_SIZE,
        params.budget_s,
    )


def registered() -> dict[str, Scenario]:
    """Every registered scenario, in registration order: the built-in ones, defined above,
    and any a caller registered with ``bench._scenario.scenario``."""
    return registry()

"""``fabric bench load SUBJECT``: drive the user's own responders and print an HDR table.

Like ``nats bench``, but latency is measured the way wrk2 does it: with ``--rate`` the load
is open-loop, every request has an intended send time on a fixed schedule, and its latency
counts from that time, so a stall in the system shows up in the percentiles instead of
quietly slowing the generator (coordinated omission). Without ``--rate`` the workers send
back to back (closed loop) and latency counts from each send.

The run is bounded twice: by ``--duration`` and by ``MAX_REQUESTS``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from bench._stats import new_histogram

__all__ = ["MAX_REQUESTS", "LoadPlan", "LoadResult", "load_table", "run_load"]

MAX_REQUESTS = 10_000_000
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What to send: ``rate`` requests/s in total (0: as fast as the workers go)."""

    subject: str
    rate: float = 0.0
    size: int = 64
    duration: float = 5.0
    concurrency: int = 4
    timeout: float = 5.0
    max_requests: int = MAX_REQUESTS

    def __post_init__(self) -> None:
        if self.rate < 0 or self.size < 0 or self.duration <= 0 or self.concurrency < 1:
            raise ValueError("rate and size must be >= 0, duration > 0, concurrency >= 1")


@dataclass(slots=True)
class LoadResult:
    """Counts and the latency histogram (nanoseconds) of one run."""

    plan: LoadPlan
    histogram: HdrHistogram = field(default_factory=new_histogram)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return self.ok + sum(self.errors.values())

    def percentiles_us(self) -> list[tuple[float, float]]:
        if self.ok == 0:
            return []
        return [(p, self.histogram.get_value_at_percentile(p) / 1e3) for p in PERCENTILES]


async def run_load(agent: Any, plan: LoadPlan) -> LoadResult:
    """Send ``plan`` through ``agent`` (an ``sdk.Agent``) and measure every reply."""
    result = LoadResult(plan)
    payload = bytes(plan.size)
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + plan.duration
    interval = 1.0 / plan.rate if plan.rate else 0.0
    next_slot = 0

    async def worker() -> None:
        nonlocal next_slot
        while True:
            slot = next_slot
            next_slot += 1
            if slot >= plan.max_requests:
                return
            if interval:
                intended = start + slot * interval
                if intended >= end:
                    return
                delay = intended - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                began = time.perf_counter_ns() - max(0, int((loop.time() - intended) * 1e9))
            else:
                if loop.time() >= end:
                    return
                began = time.perf_counter_ns()
            try:
                await agent.request(plan.subject, payload, timeout=plan.timeout)
            except Exception as exc:  # counted by type; the table shows them
                result.errors[type(exc).__name__] += 1
                continue
            result.histogram.record_value(max(1, time.perf_counter_ns() - began))
            result.ok += 1

    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    result.elapsed = loop.time() - start
    return result


def load_table(result: LoadResult) -> Any:
    """A rich table: throughput, errors and the latency percentiles."""
    from rich.table import Table

    plan = result.plan
    mode = f"open loop at {plan.rate:g}/s" if plan.rate else "closed loop"
    table = Table(
        "percentile",
        "latency µs",
        title=(
            f"{plan.subject}: {result.ok} replies in {result.elapsed:.2f} s "
            f"({result.ok / result.elapsed if result.elapsed else 0:,.0f}/s), "
            f"{plan.size} B, {plan.concurrency} workers, {mode}"
        ),
    )
    for p, us in result.percentiles_us():
        table.add_row("max" if p == 100.0 else f"p{p:g}", f"{us:,.1f}")
    if result.errors:
        table.caption = "errors: " + ", ".join(f"{k}={v}" for k, v in result.errors.items())
    return table

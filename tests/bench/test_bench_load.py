"""fabric bench load's generator against an in-memory responder (no I/O): the open-loop
schedule, coordinated-omission correction, error counting and bounds."""

from __future__ import annotations

import asyncio

import pytest

from bench.load import LoadPlan, load_table, run_load
from fabric.errors import NoResponders


class _Responder:
    """Answers after ``delay``; the first call stalls ``stall`` seconds (a GC pause, say)."""

    def __init__(self, delay: float = 0.0, stall: float = 0.0, fail: bool = False) -> None:
        self.delay, self.stall, self.fail, self.calls = delay, stall, fail, 0

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        self.calls += 1
        if self.fail:
            raise NoResponders("nobody", subject=subject)
        await asyncio.sleep(self.stall if self.calls == 1 else self.delay)
        return payload


async def test_open_loop_keeps_the_schedule_and_counts_the_stall():
    # One worker, 100/s for 0.5 s: 50 requests are due. The first stalls 200 ms, so the ~20
    # requests due meanwhile wait; their latency counts from when they were due.
    result = await run_load(_Responder(stall=0.2), LoadPlan("s", rate=100, duration=0.5,
                                                            concurrency=1))
    assert 45 <= result.ok <= 50
    p = dict(result.percentiles_us())
    assert p[50.0] < 200_000 <= p[100.0] * 1.05
    assert p[90.0] >= 50_000  # closed-loop timing would report ~0 here (coordinated omission)


async def test_closed_loop_errors_and_bounds():
    result = await run_load(_Responder(fail=True), LoadPlan("s", duration=0.2, concurrency=2,
                                                            max_requests=500))
    assert result.ok == 0 and result.errors["NoResponders"] == result.sent <= 500
    assert result.percentiles_us() == []
    table = load_table(result)
    assert "NoResponders=" in str(table.caption)


def test_plan_rejects_nonsense():
    with pytest.raises(ValueError):
        LoadPlan("s", rate=-1)
    with pytest.raises(ValueError):
        LoadPlan("s", concurrency=0)

"""The JSON document, its schema check, ratios, and the measurement harness's bookkeeping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from bench._harness import CaseParams, Profile, ScenarioContext
from bench._outcome import CaseOutcome
from bench._payloads import big_ok, check_big, parse_stream_request, pattern
from bench._results import RunRecord, SystemStatus, build_document, ratios, validate_document
from bench._stats import histogram_from_samples, summarise
from bench.systems import Client

ONE = Profile("test", repeats=2, rounds=1, scale=1.0, budget_s=10.0)


def _latency(system: str, p50s_us: Sequence[int], case: str = "rr/64B") -> CaseOutcome:
    runs = [summarise(histogram_from_samples([us * 1000] * 50)) for us in p50s_us]
    return CaseOutcome("rr", case, system, "latency", runs=runs)


def _record(outcomes: list[CaseOutcome]) -> RunRecord:
    systems = {o.system for o in outcomes}
    return RunRecord(
        config={"profile": "test", "repeats": 2},
        machine={
            "cpu_model": "x",
            "cores": 2,
            "memory_bytes": 1,
            "python": "3.11",
            "kernel": "6",
            "packages": {},
        },
        started_at="2026-01-01T00:00:00+00:00",
        systems=[SystemStatus(name, name, "ok") for name in sorted(systems)]
        + [SystemStatus("zenoh", "Zenoh", "skipped", "module missing", "pip install x")],
        outcomes=outcomes,
    )


def test_ratios_for_latencies_and_rates_with_spread() -> None:
    outcomes = [
        _latency("fabric", [100, 120]),
        _latency("aiohttp", [300, 360]),
        CaseOutcome("tp", "tp/64B", "fabric", "rate", unit="msgs/s", rates=[2e6, 1e6]),
        CaseOutcome("tp", "tp/64B", "nats", "rate", unit="msgs/s", rates=[5e5]),
        CaseOutcome("tp", "tp/64B", "aiohttp", "rate", status="n/a", reason="no one-way"),
    ]
    found = {(r["case"], r["baseline"]): r for r in ratios(outcomes)}
    assert set(found) == {("rr/64B", "aiohttp"), ("tp/64B", "nats")}
    rr = found[("rr/64B", "aiohttp")]
    assert rr["speedup"] == pytest.approx(330 / 110, rel=2e-3)
    assert rr["speedup_min"] == pytest.approx(300 / 120, rel=2e-3)
    assert rr["speedup_max"] == pytest.approx(360 / 100, rel=2e-3)
    tp = found[("tp/64B", "nats")]
    assert tp["speedup"] == pytest.approx(3.0)
    assert (tp["speedup_min"], tp["speedup_max"]) == pytest.approx((2.0, 4.0))


def test_each_fabric_mode_gets_its_own_ratios_but_not_against_the_other() -> None:
    outcomes = [
        _latency("fabric", [200]),
        _latency("fabric-latency", [50]),
        _latency("aiohttp", [400]),
    ]
    found = {(r["subject"], r["baseline"]): r["speedup"] for r in ratios(outcomes)}
    assert found == {
        ("fabric", "aiohttp"): pytest.approx(2.0, rel=2e-3),
        ("fabric-latency", "aiohttp"): pytest.approx(8.0, rel=2e-3),
    }


def test_no_ratio_without_the_fabric() -> None:
    assert ratios([_latency("aiohttp", [100]), _latency("nats", [50])]) == []


def test_document_is_valid_json_and_passes_the_schema() -> None:
    record = _record([_latency("fabric", [100, 110]), _latency("aiohttp", [300, 310])])
    record.outcomes.append(
        CaseOutcome("rr", "rr/1MiB", "aiohttp", "latency", status="failed", reason="boom")
    )
    document = json.loads(json.dumps(build_document(record)))
    assert validate_document(document) == []
    assert (
        document["results"][0]["summary"]["p50_min_us"]
        <= document["results"][0]["summary"]["p50_max_us"]
    )
    assert document["systems"][-1]["hint"] == "pip install x"


@pytest.mark.parametrize(
    ("breakage", "complaint"),
    [
        (lambda d: d.pop("machine"), "machine"),
        (lambda d: d.update(schema="other/9"), "schema"),
        (lambda d: d["machine"].pop("cpu_model"), "machine.cpu_model"),
        (lambda d: d["systems"][-1].update(reason=""), "skipped without a reason"),
        (lambda d: d["results"][0]["summary"].update(p50_us="fast"), "not a number"),
        (lambda d: d["results"][0].update(system="ghost"), "not among the systems"),
        (lambda d: d["results"][0].update(status="meh"), "status invalid"),
        (lambda d: d["results"][0].update(repeats=[]), "without repeats"),
    ],
)
def test_schema_check_catches_broken_documents(breakage: Any, complaint: str) -> None:
    document = json.loads(json.dumps(build_document(_record([_latency("fabric", [100])]))))
    breakage(document)
    problems = validate_document(document)
    assert any(complaint in p for p in problems), problems


class _Counter(Client):
    """A test system answering in memory: how many times it was called, what it answers."""

    def __init__(self, answer: int = 64) -> None:
        self.calls = 0
        self.answer = answer

    async def request(self, payload: bytes) -> int:
        self.calls += 1
        return self.answer


class _TickClock:
    """A clock that advances 1 ms each time it is read."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


async def test_harness_excludes_warmup_and_stops_at_the_count() -> None:
    client = _Counter()
    outcomes: list[CaseOutcome] = []
    steps: list[str] = []
    ctx = ScenarioContext(
        scenario="rr",
        system="t",
        client=client,
        profile=ONE,
        outcomes=outcomes,
        on_repeat=steps.append,
        clock=_TickClock(),
    )
    outcome = await ctx.latency_case(
        "rr/64B",
        CaseParams(warmup=5, count=10, budget_s=60),
        client.request,
        b"x",
        check=lambda n: n == 64,
    )
    assert outcome.status == "ok"
    assert [r.count for r in outcome.runs] == [10, 10]
    assert client.calls == 2 * (5 + 10)
    assert steps == ["rr/64B", "rr/64B"]
    assert outcome.summary()["p50_us"] == pytest.approx(1000, rel=2e-3)  # one tick per op


async def test_harness_stops_at_the_time_budget() -> None:
    client = _Counter()
    ctx = ScenarioContext(
        scenario="rr", system="t", client=client, profile=ONE, outcomes=[], clock=_TickClock()
    )
    # 2 ticks per operation, budget 10 ms: the loop ends after ~5 operations, not 1000
    outcome = await ctx.latency_case(
        "rr/64B",
        CaseParams(warmup=1, count=1000, budget_s=0.010),
        client.request,
        b"x",
        check=lambda n: n == 64,
    )
    assert all(3 <= r.count <= 7 for r in outcome.runs)


async def test_wrong_answers_fail_the_case_and_missing_operations_are_na() -> None:
    outcomes: list[CaseOutcome] = []
    client = _Counter(answer=63)
    ctx = ScenarioContext(scenario="rr", system="t", client=client, profile=ONE, outcomes=outcomes)
    bad = await ctx.latency_case(
        "rr/64B", CaseParams(1, 5, 1.0), client.request, b"x", check=lambda n: n == 64
    )
    assert bad.status == "failed" and "wrong answer" in bad.reason and bad.runs == []
    na = await ctx.rate_case("tp/64B", CaseParams(1, 5, 1.0), client.throughput, 5, 64, 1.0)
    assert na.status == "n/a" and "one-way" in na.reason
    assert [o.case for o in outcomes] == ["rr/64B", "tp/64B"]


async def test_later_rounds_add_repeats_and_never_retry_a_failed_case() -> None:
    outcomes: list[CaseOutcome] = []
    good, bad = _Counter(), _Counter(answer=1)
    for _round in range(3):
        for name, client in (("good", good), ("bad", bad)):
            ctx = ScenarioContext(
                scenario="rr", system=name, client=client, profile=ONE, outcomes=outcomes
            )
            await ctx.latency_case(
                "rr/64B", CaseParams(1, 3, 1.0), client.request, b"x", check=lambda n: n == 64
            )
    assert [(o.system, o.status) for o in outcomes] == [("good", "ok"), ("bad", "failed")]
    assert len(outcomes[0].runs) == 3 * ONE.repeats
    assert bad.calls == 1  # failed on its first answer; later rounds did not call it again


def test_big_payload_checks() -> None:
    data = pattern(1 << 20)
    assert check_big(data, 1 << 20)
    assert big_ok(data) == b"ok:1048576"
    assert not check_big(data[:-1], 1 << 20)
    corrupted = bytearray(data)
    corrupted[-1] ^= 0xFF
    assert big_ok(corrupted) == b"bad:1048576"
    assert parse_stream_request(b"2000:32") == (2000, 32)
    with pytest.raises(ValueError):
        parse_stream_request(b"2000:99999999")


def test_short_reason_keeps_the_first_line_and_the_exception() -> None:
    from bench._table import short_reason

    reason = (
        "round 1: ConnectionLost: worker exited before it was ready:\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "ImportError: cannot import name 'X'\nFatal Python error: whatever"
    )
    assert short_reason(reason) == (
        "round 1: ConnectionLost: worker exited before it was ready: ... "
        "ImportError: cannot import name 'X'"
    )
    assert short_reason("plain") == "plain"
    assert short_reason("") == ""
    assert len(short_reason("x" * 1000)) == 240

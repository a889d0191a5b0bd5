"""A run shaped like the README's: every system on rr, bigfan, stream and throughput, built
in memory from real HDR histograms (for the table and report tests)."""

from __future__ import annotations

from collections.abc import Sequence

from bench._outcome import CaseOutcome
from bench._results import RunRecord, SystemStatus
from bench._stats import histogram_from_samples, summarise

# p50s (µs) of the README's run, one repeat per spread end, for every system and case.
README: dict[str, dict[str, Sequence[int]]] = {
    "rr/64B": {
        "fabric": (276, 334), "fabric-latency": (88, 125), "fabric-crossnode": (789, 812),
        "fastapi": (1840, 1900), "aiohttp": (494, 510), "nats": (488, 500), "zenoh": (429, 440),
    },
    "rr/1MiB": {
        "fabric": (1390, 1660), "fabric-latency": (1630, 1700), "fabric-crossnode": (9900, 10100),
        "fastapi": (7150, 7300), "aiohttp": (2070, 2100), "nats": (8080, 8200),
        "zenoh": (542, 560),
    },
    "bigfan/16MiBx4": {
        "fabric": (3260, 3990), "fastapi": (144000, 150000), "aiohttp": (103000, 105000),
        "nats": (124000, 126000), "zenoh": (11700, 12000), "memcpy": (1600, 1650),
    },
    "stream/2000": {
        "fabric": (31000, 39000), "fastapi": (34600, 35000), "aiohttp": (16200, 16500),
        "nats": (22900, 23000), "zenoh": (8670, 8800),
    },
}
SCENARIO = {"rr/64B": "rr", "rr/1MiB": "rr", "bigfan/16MiBx4": "bigfan", "stream/2000": "stream"}


def _outcome(case: str, system: str, p50s: Sequence[int]) -> CaseOutcome:
    runs = [summarise(histogram_from_samples([us * 1000] * 20 + [us * 3000])) for us in p50s]
    return CaseOutcome(SCENARIO[case], case, system, "latency", runs=runs)


def sample_record() -> RunRecord:
    outcomes = [
        _outcome(case, system, p50s)
        for case, systems in README.items()
        for system, p50s in systems.items()
    ]
    outcomes += [
        CaseOutcome("throughput", "throughput/64B", "fabric", "rate", unit="msgs/s",
                    rates=[44_100.0, 58_300.0]),
        CaseOutcome("throughput", "throughput/64B", "aiohttp", "rate", status="n/a",
                    reason="HTTP has no one-way message"),
        CaseOutcome("throughput", "throughput/64B", "zenoh", "rate", unit="msgs/s",
                    rates=[785_000.0, 790_000.0]),
    ]
    SCENARIO["throughput/64B"] = "throughput"
    names = sorted({o.system for o in outcomes})
    return RunRecord(
        config={"profile": "test", "repeats": 2},
        machine={"cpu_model": "x", "cores": 2, "python": "3.11"},
        started_at="2026-01-01T00:00:00+00:00",
        systems=[SystemStatus(n, n, "ok") for n in names],
        outcomes=outcomes,
    )

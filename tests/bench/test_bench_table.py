"""The terminal output of a run: it fits the terminal, nothing is cut, ratios stay visible,
the notes explain the columns and cases, and the summary reads "x faster/slower"."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from rich.console import Console

from bench._outcome import CaseOutcome
from bench._results import RunRecord, SystemStatus, ratios, summary_lines, times_text
from bench._stats import histogram_from_samples, summarise
from bench._table import RATIO_HEADERS, format_spread, results_notes
from bench.cli import print_results

# p50s (µs) of the README's run, one repeat per spread end, for every system and case.
_README: dict[str, dict[str, Sequence[int]]] = {
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
_SCENARIO = {"rr/64B": "rr", "rr/1MiB": "rr", "bigfan/16MiBx4": "bigfan", "stream/2000": "stream"}


def _outcome(case: str, system: str, p50s: Sequence[int]) -> CaseOutcome:
    runs = [summarise(histogram_from_samples([us * 1000] * 20 + [us * 3000])) for us in p50s]
    return CaseOutcome(_SCENARIO[case], case, system, "latency", runs=runs)


def _record() -> RunRecord:
    outcomes = [
        _outcome(case, system, p50s)
        for case, systems in _README.items()
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
    _SCENARIO["throughput/64B"] = "throughput"
    names = sorted({o.system for o in outcomes})
    return RunRecord(
        config={"profile": "test", "repeats": 2},
        machine={"cpu_model": "x", "cores": 2, "python": "3.11"},
        started_at="2026-01-01T00:00:00+00:00",
        systems=[SystemStatus(n, n, "ok") for n in names],
        outcomes=outcomes,
    )


def _render(width: int) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    print_results(console, _record())
    return console.export_text()


@pytest.mark.parametrize("width", [100, 80, 120, 200])
def test_the_output_fits_the_terminal_and_no_cell_is_cut(width: int) -> None:
    text = _render(width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for header in RATIO_HEADERS.values():
        assert header in text  # every fabric mode's ratio column is kept
    for case in _README:
        assert case in text
    assert "276-334 µs" in text  # the spread is visible


def test_at_100_columns_every_ratio_value_is_printed_whole() -> None:
    text = _render(100)
    record = _record()
    for r in ratios(record.outcomes):
        speedup = r["speedup"]
        number = f"{speedup:.2f}" if speedup < 10 else f"{speedup:.0f}"
        assert f"{number}x" in text, (r["case"], r["subject"], r["baseline"])


def test_the_notes_say_what_ratios_and_cases_mean_and_point_to_the_docs() -> None:
    notes = results_notes(_record(), {"rr": "request/reply", "bigfan": "16 MiB to 4",
                                      "stream": "2000 chunks", "throughput": "one-way"}).plain
    assert "<subject>" not in notes
    assert "fabric x: how many times faster the fabric on one host is" in notes
    assert "latency x" in notes and "2 nodes x" in notes
    assert "bigfan: 16 MiB to 4" in notes
    assert "docs/bench.md" in notes
    # The default summaries come from the registered scenarios.
    assert "rr: request/reply between two agent processes" in results_notes(_record()).plain


def test_summary_compares_each_fabric_mode_with_the_fastest_peer_and_http() -> None:
    lines = {(s.case, s.subject): s for s in summary_lines(ratios(_record().outcomes))}
    rr = lines[("rr/64B", "fabric")]
    assert rr.peer is not None and rr.http is not None
    assert rr.peer.baseline == "zenoh"  # the fastest peer, not the slowest
    assert rr.http.baseline == "aiohttp"
    assert rr.peer.speedup == pytest.approx(434.5 / 305, rel=0.02)
    stream = lines[("stream/2000", "fabric")]
    assert stream.peer is not None and stream.peer.speedup < 1
    tp = lines[("throughput/64B", "fabric")]
    assert tp.http is None and tp.peer is not None and tp.peer.baseline == "zenoh"
    text = _render(100)
    assert "summary" in text
    assert "1.42x faster than zenoh" in text
    assert "slower than zenoh" in text


def test_times_text() -> None:
    assert times_text(2.0) == "2.00x faster"
    assert times_text(0.5) == "2.00x slower"
    assert times_text(26.4) == "26x faster"
    assert times_text(0.0) == "n/a"


def test_format_spread_shares_the_unit() -> None:
    assert format_spread(276, 334) == "276-334 µs"
    assert format_spread(980, 1100) == "980 µs-1.1 ms"

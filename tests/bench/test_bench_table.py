"""The terminal output of a run: it fits the terminal, nothing is cut, each fabric row keeps
its ratio against aiohttp and NATS (or says why there is none), the notes explain the columns
and cases, and the summary reads "x faster/slower"."""

from __future__ import annotations

import pytest
from rich.console import Console
from sample_run import README as _README
from sample_run import sample_record as _record

from bench._outcome import CaseOutcome
from bench._results import (
    SUBJECTS,
    VersusCell,
    ratios,
    record_versus,
    summary_lines,
    times_text,
    versus_cells,
)
from bench._stats import histogram_from_samples, summarise
from bench._table import VERSUS_HEADERS, format_spread, format_versus, results_notes
from bench.cli import print_results


def _render(width: int) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    print_results(console, _record())
    return console.export_text()


@pytest.mark.parametrize("width", [100, 80, 120, 200])
def test_the_output_fits_the_terminal_and_no_cell_is_cut(width: int) -> None:
    text = _render(width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for header in VERSUS_HEADERS.values():
        assert header in text  # both ratio columns are kept
    for case in _README:
        assert case in text
    assert "276-334 µs" in text  # the spread is visible


def test_at_100_columns_every_fabric_row_shows_its_ratios_whole() -> None:
    text = _render(100)
    record = _record()
    wanted = [r for r in ratios(record.outcomes) if r["baseline"] in ("aiohttp", "nats")]
    assert wanted
    for r in wanted:
        speedup = r["speedup"]
        number = f"{speedup:.2f}" if speedup < 10 else f"{speedup:.0f}"
        assert f"{number}x" in text, (r["case"], r["subject"], r["baseline"])
    # The rr/64B fabric row: 502/305 against aiohttp, 494/305 against NATS, on one line.
    line = next(ln for ln in text.splitlines() if " fabric " in ln and "305 µs" in ln)
    assert line.rstrip().endswith("1.65x       1.62x"), line


def _latency(case: str, system: str, p50s: list[int], p99_factor: int = 3) -> CaseOutcome:
    runs = [
        summarise(histogram_from_samples([us * 1000] * 99 + [us * 1000 * p99_factor] * 2))
        for us in p50s
    ]
    return CaseOutcome("rr", case, system, "latency", runs=runs)


def test_versus_cells_give_p50_and_p99_ratios_per_fabric_row() -> None:
    outcomes = [
        _latency("rr/64B", "fabric", [100], p99_factor=4),
        _latency("rr/64B", "fabric-crossnode", [400], p99_factor=2),
        _latency("rr/64B", "aiohttp", [200], p99_factor=3),
        _latency("rr/64B", "nats", [300], p99_factor=2),
        _latency("rr/64B", "zenoh", [50]),
    ]
    cells = versus_cells(
        ratios(outcomes),
        {(o.case, o.system): o.status for o in outcomes},
        {o.system: "ok" for o in outcomes},
    )
    assert set(cells) == {("rr/64B", "fabric"), ("rr/64B", "fabric-crossnode")}
    aiohttp, nats = cells[("rr/64B", "fabric")]
    assert aiohttp.baseline == "aiohttp" and nats.baseline == "nats"
    assert aiohttp.speedup == pytest.approx(2.0, rel=2e-3)
    assert aiohttp.speedup_p99 == pytest.approx(600 / 400, rel=2e-3)
    assert nats.speedup == pytest.approx(3.0, rel=2e-3)
    assert nats.speedup_p99 == pytest.approx(600 / 400, rel=2e-3)
    aiohttp, nats = cells[("rr/64B", "fabric-crossnode")]
    assert aiohttp.speedup == pytest.approx(0.5, rel=2e-3)
    assert nats.speedup_p99 == pytest.approx(600 / 800, rel=2e-3)


def test_a_missing_baseline_says_why_in_its_column() -> None:
    outcomes = [
        _latency("rr/64B", "fabric", [100]),
        CaseOutcome("throughput", "throughput/64B", "fabric", "rate", unit="msgs/s",
                    rates=[1000.0]),
        CaseOutcome("throughput", "throughput/64B", "aiohttp", "rate", status="n/a",
                    reason="HTTP has no one-way message"),
        _latency("rr/64B", "aiohttp", [200]),
    ]
    status = {(o.case, o.system): o.status for o in outcomes}
    found = ratios(outcomes)
    skipped = versus_cells(found, status, {"fabric": "ok", "aiohttp": "ok", "nats": "skipped"})
    assert skipped[("rr/64B", "fabric")][1] == VersusCell("nats", missing="not installed")
    assert skipped[("throughput/64B", "fabric")][0] == VersusCell("aiohttp", missing="n/a")
    failed = versus_cells(found, status, {"fabric": "ok", "aiohttp": "ok", "nats": "failed"})
    assert failed[("rr/64B", "fabric")][1].missing == "failed"
    absent = versus_cells(found, status, {"fabric": "ok", "aiohttp": "ok"})
    assert absent[("rr/64B", "fabric")][1].missing == "not in run"
    assert format_versus(VersusCell("nats", missing="not installed")) == (
        "[yellow]not installed[/yellow]"
    )
    assert format_versus(VersusCell("nats", 2.0, 1.5)) == "[green]2.00x[/green]"
    assert format_versus(VersusCell("nats", 0.5)) == "[red]0.50x[/red]"
    assert format_versus(VersusCell("nats", 26.4)) == "[green]26x[/green]"


def test_when_nats_is_not_installed_the_table_says_so_on_every_fabric_row() -> None:
    record = _record()
    record.outcomes = [o for o in record.outcomes if o.system != "nats"]
    for status in record.systems:
        if status.name == "nats":
            status.status, status.reason = "skipped", "executable 'nats-server' is not on PATH"
    console = Console(width=100, record=True, force_terminal=False, color_system=None)
    print_results(console, record)
    text = console.export_text()
    fabric_rows = [o for o in record.outcomes if o.system in SUBJECTS and o.status == "ok"]
    assert text.count("not installed") == len(fabric_rows)
    assert len(record_versus(record)) == len(fabric_rows)
    assert "nats-server" in text  # the systems-not-measured table gives the reason


def test_the_notes_say_what_ratios_and_cases_mean_and_point_to_the_docs() -> None:
    notes = results_notes(_record(), {"rr": "request/reply", "bigfan": "16 MiB to 4",
                                      "stream": "2000 chunks", "throughput": "one-way"}).plain
    assert "<subject>" not in notes
    assert "vs aiohttp / vs NATS: on each fabric row" in notes
    assert "p99 ratios in --json and --report" in notes
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

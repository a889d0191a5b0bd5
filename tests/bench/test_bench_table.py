"""The terminal output of a run: it fits the terminal, nothing is cut, ratios stay visible,
the notes explain the columns and cases, and the summary reads "x faster/slower"."""

from __future__ import annotations

import pytest
from rich.console import Console
from sample_run import README as _README
from sample_run import sample_record as _record

from bench._results import ratios, summary_lines, times_text
from bench._table import RATIO_HEADERS, format_spread, results_notes
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

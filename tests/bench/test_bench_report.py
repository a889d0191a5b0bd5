"""The HTML report, checked on the generated files: one section per case with its table (each
fabric row with p50 and p99 ratios against aiohttp and NATS), a latency plot and a ratio plot;
every PNG the same readable size; one colour per system in every plot."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from sample_run import README as _README
from sample_run import sample_record as _record

from bench._report import FIGURE_DPI, FIGURE_INCHES, system_colour, write_report
from bench._results import build_document


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _write(tmp_path: Path) -> tuple[str, Path]:
    document = json.loads(json.dumps(build_document(_record())))
    index = write_report(document, tmp_path / "report")
    return index.read_text(), index.parent


def test_one_section_per_case_with_its_table_and_both_plots(tmp_path: Path) -> None:
    page, _ = _write(tmp_path)
    sections = re.findall(r'<section class="case" id="([^"]+)">(.*?)</section>', page, re.S)
    assert [s[0] for s in sections] == [
        "rr-64b", "rr-1mib", "bigfan-16mibx4", "stream-2000", "throughput-64b"
    ]
    body = dict(sections)
    for slug in ("rr-64b", "rr-1mib", "bigfan-16mibx4", "stream-2000"):
        assert f'src="latency-{slug}.png"' in body[slug]
        assert f'src="ratio-{slug}.png"' in body[slug]
    # Rates have no latency distribution, but keep their ratios.
    assert 'src="ratio-throughput-64b.png"' in body["throughput-64b"]
    # Each fabric row has its p50 and p99 ratio against aiohttp and NATS.
    rr = body["rr-64b"]
    for header in ("vs aiohttp", "vs NATS"):
        assert f"<th>{header}</th>" in rr
    rows = re.findall(r"<tr>(.*?)</tr>", rr)
    fabric = next(r for r in rows if ">fabric<" in r)
    assert "<td>p50 1.65x · p99 1.65x</td><td>p50 1.62x · p99 1.62x</td>" in fabric
    for row in rows:
        if any(f">{name}<" in row for name in ("fabric", "fabric-latency", "fabric-crossnode")):
            assert row.count("p50 ") == 2
        else:
            assert "p50 " not in row  # baselines carry no ratio of their own
    throughput = re.findall(r"<tr>(.*?)</tr>", body["throughput-64b"])
    fabric_tp = next(r for r in throughput if ">fabric<" in r)
    assert '<span class="missing">n/a</span>' in fabric_tp  # aiohttp has no one-way message
    assert "docs/bench.md" in page
    summary = page[page.index("<h2>Summary</h2>") : page.index("<h2>Results by case</h2>")]
    assert "<td>rr/64B</td><td>fabric</td><td>1.42x faster than zenoh</td>" in summary
    assert "<td>2 nodes</td>" in summary and "slower than aiohttp" in summary


def test_every_plot_has_the_same_readable_size(tmp_path: Path) -> None:
    _, directory = _write(tmp_path)
    pngs = sorted(directory.glob("*.png"))
    assert len(pngs) == 2 * len(_README) + 1
    expected = (int(FIGURE_INCHES[0] * FIGURE_DPI), int(FIGURE_INCHES[1] * FIGURE_DPI))
    for png in pngs:
        assert _png_size(png) == expected, png  # was 4,356 x 440 for one ratio plot


def test_a_system_has_one_colour_in_every_plot(tmp_path: Path) -> None:
    page, _ = _write(tmp_path)
    legend = dict(re.findall(r'<li data-system="([^"]+)" data-colour="([^"]+)">', page))
    # Every system drawn appears once with the single colour all its plots used.
    assert set(legend) >= {"fabric", "fabric-latency", "fabric-crossnode", "aiohttp", "zenoh"}
    for system, colour in legend.items():
        assert colour == system_colour(system)
    assert len(set(legend.values())) == len(legend)  # and no two systems share one

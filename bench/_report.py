"""``--report DIR``: an HTML page with the tables and matplotlib plots (PNG files beside it).

Works from the JSON document alone, so a report can be rebuilt from a saved ``--json``.
One section per case: the results of every system, each fabric row with its p50 and p99
ratios against aiohttp and NATS (or why there are none), the
latency distribution (every system's percentile curve, from the HDR histograms of all its
repeats merged) and the ratio chart (each fabric mode's speed-up over each baseline, with the
spread as error bars). Every plot has the same size and readable labels, legends sit outside
the axes, and a system has one colour everywhere (:func:`system_colour`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from bench._results import SUBJECTS, VERSUS, VersusCell, summary_lines, times_text, versus_cells
from bench._stats import new_histogram
from bench._table import (
    RATIO_HEADERS,
    VERSUS_HEADERS,
    format_latency,
    format_rate,
    format_spread,
)

__all__ = ["FIGURE_DPI", "FIGURE_INCHES", "system_colour", "write_report"]

_CURVE = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)
#: Every plot's size: wide enough for its labels at 100 dpi, small enough for a laptop screen.
FIGURE_INCHES = (8.0, 4.2)
FIGURE_DPI = 100
#: One colour per system, the same in every plot (tab10, in the order of bench/systems).
_COLOURS = {
    "fabric": "#1f77b4",
    "fabric-latency": "#17becf",
    "fabric-crossnode": "#9467bd",
    "fabric-crossnode-direct": "#bcbd22",
    "fastapi": "#ff7f0e",
    "aiohttp": "#d62728",
    "nats": "#2ca02c",
    "zenoh": "#8c564b",
    "memcpy": "#7f7f7f",
}
_MEANING = {
    "fabric": "the fabric on one host",
    "fabric-latency": "the fabric in latency mode",
    "fabric-crossnode": "the fabric across two nodes",
    "fabric-crossnode-direct": "the fabric across two nodes, direct TCP with grants",
}
_SPARE = ("#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39")


def system_colour(system: str) -> str:
    """The colour of ``system`` in every plot (a stable spare one for unknown systems)."""
    found = _COLOURS.get(system)
    if found is not None:
        return found
    return _SPARE[sum(system.encode()) % len(_SPARE)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _merged(repeats: Sequence[dict[str, Any]]) -> HdrHistogram:
    merged = new_histogram()
    for repeat in repeats:
        merged.add(HdrHistogram.decode(repeat["hdr"].encode()))
    return merged


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    # No tight bbox: every PNG keeps FIGURE_INCHES x FIGURE_DPI pixels; the right margin
    # holds the legend, outside the axes, so it never covers a line or a bar.
    fig.subplots_adjust(left=0.1, right=0.74, top=0.88, bottom=0.2)
    fig.savefig(path, dpi=FIGURE_DPI)


def _latency_plot(case: str, results: Sequence[dict[str, Any]], path: Path) -> dict[str, str]:
    """Percentile curves of ``case``; returns the colour used for each system drawn."""
    curves = []
    for result in results:
        if result["status"] != "ok" or result["kind"] != "latency":
            continue
        hist = _merged(result["repeats"])
        values = hist.get_percentile_to_value_dict(list(_CURVE))
        xs = [1.0 / (1.0 - p / 100.0) if p < 100.0 else 1e5 for p in _CURVE]
        curves.append((result["system"], xs, [values[p] / 1e3 for p in _CURVE]))
    if not curves:
        return {}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_INCHES)
    used: dict[str, str] = {}
    for system, xs, ys in curves:
        (line,) = ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3,
            label=system,
            color=system_colour(system),
            linewidth=2.5 if system in SUBJECTS else 1.2,
        )
        used[system] = str(line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1.0 / (1.0 - p / 100.0) for p in (0.0, 50.0, 90.0, 99.0, 99.9, 99.99)]
    ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"], fontsize=9)
    ax.set_xlabel("percentile", fontsize=10)
    ax.set_ylabel("latency (µs, log)", fontsize=10)
    ax.set_title(f"{case}: latency distribution (all repeats)", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    _save(fig, path)
    plt.close(fig)
    return used


def _ratio_plot(case: str, rows: Sequence[dict[str, Any]], path: Path) -> dict[str, str]:
    """Each fabric mode's speed-up over each baseline on ``case``, grouped by baseline;
    returns the colour used for each fabric mode drawn."""
    if not rows:
        return {}
    subjects = [s for s in SUBJECTS if any(r["subject"] == s for r in rows)]
    baselines: list[str] = []
    for r in rows:
        if r["baseline"] not in baselines:
            baselines.append(r["baseline"])
    by_pair = {(r["subject"], r["baseline"]): r for r in rows}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_INCHES)
    width = 0.8 / len(subjects)
    used: dict[str, str] = {}
    for i, subject in enumerate(subjects):
        xs, values, lower, upper = [], [], [], []
        for j, baseline in enumerate(baselines):
            pair = by_pair.get((subject, baseline))
            if pair is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            values.append(pair["speedup"])
            lower.append(max(0.0, pair["speedup"] - pair.get("speedup_min", pair["speedup"])))
            upper.append(max(0.0, pair.get("speedup_max", pair["speedup"]) - pair["speedup"]))
        bars = ax.bar(
            xs,
            values,
            width=width,
            color=system_colour(subject),
            yerr=[lower, upper],
            capsize=3,
            label=RATIO_HEADERS.get(subject, subject),
        )
        used[subject] = system_colour(subject)
        ax.bar_label(bars, labels=[f"{v:.2g}x" for v in values], fontsize=8, padding=2)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 1.8)  # room for the value labels above the tallest bar
    ax.set_xticks(range(len(baselines)), [f"vs {b}" for b in baselines], fontsize=9)
    ax.set_ylabel("speed-up (x, >1: fabric faster)", fontsize=10)
    ax.set_title(f"{case}: each fabric mode against each baseline", fontsize=11)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    _save(fig, path)
    plt.close(fig)
    return used


def _cells(result: dict[str, Any]) -> list[str]:
    summary = result["summary"]
    if result["status"] != "ok":
        return [f"{result['status']}: {result['reason']}", "", "", "", ""]
    if result["kind"] == "rate":
        return [
            format_rate(summary["rate"], result["unit"]),
            f"{format_rate(summary['rate_min'], '')} - {format_rate(summary['rate_max'], '')}",
            "",
            "",
            "",
        ]
    return [
        format_latency(summary["p50_us"]),
        format_spread(summary["p50_min_us"], summary["p50_max_us"]),
        format_latency(summary["p99_us"]),
        format_latency(summary["p999_us"]),
        format_latency(summary["max_us"]),
    ]


def _versus_html(cell: VersusCell) -> str:
    if cell.speedup is None:
        return f'<span class="missing">{html.escape(cell.missing)}</span>'
    text = f"p50 {cell.speedup:.2f}x"
    if cell.speedup_p99 is not None:
        text += f" · p99 {cell.speedup_p99:.2f}x"
    return text


def _case_table(
    rows: Sequence[dict[str, Any]], versus: dict[tuple[str, str], list[VersusCell]]
) -> str:
    head = ["system", "p50", "spread", "p99", "p99.9", "max"]
    head += [VERSUS_HEADERS.get(b, f"vs {b}") for b in VERSUS]
    out = ["<table><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr>"]
    for result in rows:
        system = result["system"]
        swatch = f'<span class="swatch" style="background:{system_colour(system)}"></span>'
        cells = [swatch + html.escape(system), *map(html.escape, _cells(result))]
        row = versus.get((result["case"], system))
        cells += [_versus_html(c) for c in row] if row else [""] * len(VERSUS)
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def write_report(document: dict[str, Any], directory: Path) -> Path:
    """Write ``index.html`` and its PNG plots into ``directory``; returns the page's path.

    Raises:
        OSError: the directory cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = document["results"]
    ratios: list[dict[str, Any]] = [
        {"subject": "fabric", **r} for r in document["ratios"]
    ]
    subjects = [s for s in SUBJECTS if any(r["subject"] == s for r in ratios)] or ["fabric"]
    versus = versus_cells(
        ratios,
        {(r["case"], r["system"]): r["status"] for r in results},
        {s["name"]: s["status"] for s in document["systems"]},
    )
    cases: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        cases.setdefault(result["case"], []).append(result)

    sections: list[str] = []
    colours: dict[str, set[str]] = {}
    for case, rows in cases.items():
        case_ratios = [r for r in ratios if r["case"] == case]
        figures = []
        for kind, plot, data in (
            ("latency", _latency_plot, rows),
            ("ratio", _ratio_plot, case_ratios),
        ):
            name = f"{kind}-{_slug(case)}.png"
            used = plot(case, data, directory / name)  # type: ignore[operator]
            for system, colour in used.items():
                colours.setdefault(system, set()).add(colour)
            if used:
                figures.append(
                    f'<figure class="{kind}"><img src="{name}" '
                    f'alt="{kind} plot of {html.escape(case)}"></figure>'
                )
        sections.append(
            f'<section class="case" id="{_slug(case)}"><h3>{html.escape(case)}</h3>'
            f"{_case_table(rows, versus)}{''.join(figures)}</section>"
        )

    summary = "".join(
        f"<tr><td>{html.escape(line.case)}</td>"
        f"<td>{html.escape(RATIO_HEADERS.get(line.subject, line.subject).removesuffix(' x'))}</td>"
        + "".join(
            f"<td>{times_text(v.speedup)} than {html.escape(v.baseline)}</td>" if v else "<td></td>"
            for v in (line.peer, line.http)
        )
        + "</tr>"
        for line in summary_lines(ratios)
    )
    legend = "".join(
        f'<li data-system="{html.escape(system)}" data-colour="{sorted(found)[0]}">'
        f'<span class="swatch" style="background:{sorted(found)[0]}"></span>'
        f"{html.escape(system)}</li>"
        for system, found in colours.items()
        if len(found) == 1
    )
    machine = document["machine"]
    machine_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in machine.items()
        if k != "packages"
    )
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    systems = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{html.escape(s['label'])}</td>"
        f"<td>{html.escape(s['status'])}</td><td>{html.escape(s['reason'])}</td>"
        f"<td>{html.escape(s['hint'] if s['status'] == 'skipped' else '')}</td></tr>"
        for s in document["systems"]
    )
    meaning = (
        f"on each fabric row ({', '.join(_MEANING.get(s, s) for s in subjects)}), "
        + " and ".join(f'"{VERSUS_HEADERS.get(b, b)}"' for b in VERSUS)
        + " say how many times faster it is than that system on the same case, at p50 and"
        " at p99"
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fabric bench</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }}
figure {{ display: inline-block; margin: 0.5em 0; }}
img {{ max-width: 100%; }}
.missing {{ color: #a60; }}
.swatch {{ display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; }}
ul.colours {{ list-style: none; padding: 0; display: flex; gap: 1.5em; flex-wrap: wrap; }}
</style></head><body>
<h1>fabric bench</h1>
<p>Started {html.escape(document["started_at"])}, took {document["duration_s"]:.0f} s,
profile {html.escape(str(document["config"].get("profile")))},
{document["config"].get("repeats")} repeats per case. p50 is the median of the repeats' p50s;
the spread is their min-max; {html.escape(meaning)} (above 1: faster). Scenarios and columns
are explained in docs/bench.md.</p>
<ul class="colours">{legend}</ul>
<h2>Summary</h2>
<p>Each fabric mode against the fastest peer broker (NATS, Zenoh) and the fastest HTTP stack
measured on each case.</p>
<table><tr><th>case</th><th>fabric</th><th>vs best peer</th><th>vs best HTTP</th></tr>
{summary}</table>
<h2>Results by case</h2>
{"".join(sections) or "<p>nothing measured</p>"}
<h2>Systems</h2>
<table><tr><th>name</th><th>system</th><th>status</th><th>reason</th><th>install</th></tr>{systems}</table>
<h2>Machine</h2>
<table>{machine_rows}</table>
<p>Packages: {html.escape(packages)}</p>
</body></html>
"""
    index = directory / "index.html"
    index.write_text(page)
    return index

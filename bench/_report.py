"""``--report DIR``: an HTML page with the tables and matplotlib plots (PNG files beside it).

Works from the JSON document alone, so a report can be rebuilt from a saved ``--json``.
Plots: one latency distribution per case (every system's percentile curve, from the HDR
histograms of all its repeats merged) and one ratio chart per scenario (the fabric's speed-up
over each baseline, with the spread as error bars).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from bench._results import SUBJECTS
from bench._stats import new_histogram
from bench._table import format_latency, format_rate

__all__ = ["write_report"]

_CURVE = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _merged(repeats: Sequence[dict[str, Any]]) -> HdrHistogram:
    merged = new_histogram()
    for repeat in repeats:
        merged.add(HdrHistogram.decode(repeat["hdr"].encode()))
    return merged


def _latency_plot(case: str, results: Sequence[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for result in results:
        if result["status"] != "ok" or result["kind"] != "latency":
            continue
        hist = _merged(result["repeats"])
        values = hist.get_percentile_to_value_dict(list(_CURVE))
        xs = [1.0 / (1.0 - p / 100.0) if p < 100.0 else 1e5 for p in _CURVE]
        curves.append((result["system"], xs, [values[p] / 1e3 for p in _CURVE]))
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for system, xs, ys in curves:
        ax.plot(
            xs, ys, marker="o", markersize=3, label=system, linewidth=2 if system == "fabric" else 1
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1.0 / (1.0 - p / 100.0) for p in (0.0, 50.0, 90.0, 99.0, 99.9, 99.99)]
    ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (µs)")
    ax.set_title(f"{case}: latency distribution (all repeats)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _ratio_plot(scenario: str, ratios: Sequence[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ratios if r["scenario"] == scenario]
    if not rows:
        return False
    labels = [f"{r['case']}\n{r.get('subject', 'fabric')}\nvs {r['baseline']}" for r in rows]
    values = [r["speedup"] for r in rows]
    lower = [max(0.0, r["speedup"] - r["speedup_min"]) for r in rows]
    upper = [max(0.0, r["speedup_max"] - r["speedup"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    colours = ["tab:green" if v >= 1 else "tab:red" for v in values]
    ax.bar(range(len(rows)), values, color=colours, yerr=[lower, upper], capsize=4)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("fabric speed-up (x, >1 faster)")
    ax.set_title(f"{scenario}: fabric against each baseline")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _row(result: dict[str, Any], ratio: dict[str, Any] | None) -> str:
    cells = [result["case"], result["system"]]
    summary = result["summary"]
    if result["status"] != "ok":
        cells += [f"{result['status']}: {result['reason']}", "", "", "", ""]
    elif result["kind"] == "rate":
        cells += [
            format_rate(summary["rate"], result["unit"]),
            f"{format_rate(summary['rate_min'], '')} - {format_rate(summary['rate_max'], '')}",
            "",
            "",
            "",
        ]
    else:
        cells += [
            format_latency(summary["p50_us"]),
            f"{format_latency(summary['p50_min_us'])} - {format_latency(summary['p50_max_us'])}",
            format_latency(summary["p99_us"]),
            format_latency(summary["p999_us"]),
            format_latency(summary["max_us"]),
        ]
    cells.append(f"{ratio['speedup']:.2f}x" if ratio else "")
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def write_report(document: dict[str, Any], directory: Path) -> Path:
    """Write ``index.html`` and its PNG plots into ``directory``; returns the page's path.

    Raises:
        OSError: the directory cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = document["results"]
    ratios: list[dict[str, Any]] = document["ratios"]
    by_pair = {
        (r["case"], r["baseline"]): r for r in ratios if r.get("subject", "fabric") == "fabric"
    }
    cases: dict[str, list[dict[str, Any]]] = {}
    scenarios: list[str] = []
    for result in results:
        cases.setdefault(result["case"], []).append(result)
        if result["scenario"] not in scenarios:
            scenarios.append(result["scenario"])

    figures: list[str] = []
    for scenario in scenarios:
        name = f"ratio-{_slug(scenario)}.png"
        if _ratio_plot(scenario, ratios, directory / name):
            figures.append(
                f'<figure><img src="{name}" alt="ratios for {html.escape(scenario)}"></figure>'
            )
        for case, rows in cases.items():
            if rows[0]["scenario"] != scenario:
                continue
            name = f"latency-{_slug(case)}.png"
            if _latency_plot(case, rows, directory / name):
                figures.append(
                    f'<figure><img src="{name}" alt="latency of {html.escape(case)}"></figure>'
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
    table = "".join(
        _row(r, by_pair.get((r["case"], r["system"])) if r["system"] not in SUBJECTS else None)
        for r in results
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fabric bench</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>fabric bench</h1>
<p>Started {html.escape(document["started_at"])}, took {document["duration_s"]:.0f} s,
profile {html.escape(str(document["config"].get("profile")))},
{document["config"].get("repeats")} repeats per case. p50 is the median of the repeats' p50s;
the spread is their min-max; "fabric x" is how many times faster the fabric is than that row.</p>
<h2>Results</h2>
<table><tr><th>case</th><th>system</th><th>p50</th><th>spread</th><th>p99</th><th>p99.9</th>
<th>max</th><th>fabric x</th></tr>{table}</table>
<h2>Plots</h2>
{"".join(figures) or "<p>nothing to plot</p>"}
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

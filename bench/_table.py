"""The terminal table: one row per case and system, with the fabric's ratio on each."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from bench._outcome import CaseOutcome
from bench._results import SUBJECTS, RunRecord, ratios

__all__ = [
    "format_latency",
    "format_rate",
    "problems_table",
    "results_table",
    "short_reason",
    "skipped_table",
]


def format_latency(us: float) -> str:
    """``812 µs``, ``1.33 ms``, ``2.1 s``: three significant figures."""
    for scale, unit in ((1.0, "µs"), (1e3, "ms")):
        text = f"{us / scale:.3g}"
        if "e" not in text and float(text) < 1000:
            return f"{text} {unit}"
    return f"{us / 1e6:.3g} s"


def format_rate(rate: float, unit: str) -> str:
    """``291k msgs/s``, ``1.41M msgs/s``."""
    for scale, prefix in ((1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{rate / scale:.3g}{prefix} {unit}".rstrip()
    return f"{rate:.3g} {unit}".rstrip()


def _ratio_text(ratio: dict[str, Any] | None) -> str:
    if ratio is None:
        return ""
    speedup = ratio["speedup"]
    colour = "green" if speedup >= 1 else "red"
    return f"[{colour}]{speedup:.2f}x[/{colour}]"


def results_table(record: RunRecord, *, wide: bool = True) -> Table:
    """Every case of ``record``: p50 with the spread of the repeats' p50s, tail percentiles,
    and how many times faster the fabric is than the row's system (>1: the fabric wins).

    ``wide=False`` leaves out p99.9 and max (they stay in the JSON) to fit 80 columns.
    """
    found = ratios(record.outcomes)
    by_key = {(r["subject"], r["case"], r["baseline"]): r for r in found}
    present = {r["subject"] for r in found}
    subjects = [s for s in SUBJECTS if s in present] or [SUBJECTS[0]]
    table = Table(
        title="fabric bench - p50: median over repeats; spread: min-max of the repeats' p50s",
        caption="<subject> x: how many times faster that fabric mode is than the row (>1: faster)",
    )
    columns = [("case", "left"), ("system", "left"), ("p50", "right"), ("spread", "right")]
    columns += (
        [("p99", "right"), ("p99.9", "right"), ("max", "right")] if wide else [("p99", "right")]
    )
    columns += [(f"{subject} x", "right") for subject in subjects]
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=column != "spread")  # type: ignore[arg-type]
    last_case = None
    for outcome in _ordered(record.outcomes):
        if last_case is not None and outcome.case != last_case:
            table.add_section()
        first = outcome.case != last_case
        last_case = outcome.case
        cells = _cells(outcome)
        if not wide:
            cells = cells[:3]
        marks = [_ratio_text(by_key.get((s, outcome.case, outcome.system))) for s in subjects]
        table.add_row(outcome.case if first else "", outcome.system, *cells, *marks)
    return table


def _cells(outcome: CaseOutcome) -> list[str]:
    if outcome.status != "ok":
        style = "yellow" if outcome.status == "n/a" else "red"
        return [f"[{style}]{outcome.status}[/{style}]", "", "", "", ""]
    s = outcome.summary()
    if outcome.kind == "rate":
        return [
            format_rate(s["rate"], outcome.unit),
            f"{format_rate(s['rate_min'], '')}-{format_rate(s['rate_max'], '')}".strip(),
            "",
            "",
            "",
        ]
    return [
        format_latency(s["p50_us"]),
        f"{format_latency(s['p50_min_us'])}-{format_latency(s['p50_max_us'])}",
        format_latency(s["p99_us"]),
        format_latency(s["p999_us"]),
        format_latency(s["max_us"]),
    ]


def short_reason(reason: str, limit: int = 240) -> str:
    """The gist of a failure for the terminal: its first line and, when a traceback follows,
    the exception line at its end (the JSON keeps the whole text)."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    if not lines:
        return ""
    gist = lines[0]
    errors = [line for line in lines[1:] if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line)]
    if errors:
        gist = f"{gist} ... {errors[-1]}"
    return gist if len(gist) <= limit else gist[: limit - 3] + "..."


def problems_table(record: RunRecord) -> Table | None:
    """Cases that failed or do not apply, with the reason (None if there are none)."""
    rows = [o for o in record.outcomes if o.status != "ok"]
    if not rows:
        return None
    table = Table(title="cases not measured")
    for column in ("case", "system", "status", "reason"):
        table.add_column(column)
    for o in rows:
        table.add_row(o.case, o.system, o.status, short_reason(o.reason))
    return table


def _ordered(outcomes: Sequence[CaseOutcome]) -> list[CaseOutcome]:
    case_order: dict[str, int] = {}
    for o in outcomes:
        case_order.setdefault(o.case, len(case_order))
    system_order: dict[str, int] = {}
    for o in outcomes:
        system_order.setdefault(o.system, len(system_order))
    return sorted(outcomes, key=lambda o: (case_order[o.case], system_order[o.system]))


def skipped_table(record: RunRecord) -> Table | None:
    """Systems that were skipped or failed as a whole, with reason and hint (None if none)."""
    rows = [s for s in record.systems if s.status != "ok"]
    if not rows:
        return None
    table = Table(title="systems not measured")
    for column in ("system", "status", "reason", "how to get it"):
        table.add_column(column)
    for s in rows:
        table.add_row(
            s.label, s.status, short_reason(s.reason), s.hint if s.status == "skipped" else ""
        )
    return table

"""The terminal table: one row per case and system, each fabric row with its ratio against
aiohttp and NATS from the same run, laid out to fit the terminal; the notes under it; the
end-of-run summary."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from bench._outcome import CaseOutcome
from bench._results import (
    SUBJECTS,
    VERSUS,
    RunRecord,
    VersusCell,
    ratios,
    record_versus,
    summary_lines,
    times_text,
)

__all__ = [
    "DOCS",
    "RATIO_HEADERS",
    "VERSUS_HEADERS",
    "format_latency",
    "format_rate",
    "format_spread",
    "format_versus",
    "problems_table",
    "results_notes",
    "results_table",
    "short_reason",
    "skipped_table",
    "summary_table",
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


#: The ratio columns of the table, one per baseline of ``VERSUS``.
VERSUS_HEADERS: dict[str, str] = {"aiohttp": "vs aiohttp", "nats": "vs NATS"}
#: Short names of the fabric modes (summary, report legends).
RATIO_HEADERS: dict[str, str] = {
    "fabric": "fabric x",
    "fabric-latency": "latency x",
    "fabric-crossnode": "2 nodes x",
    "fabric-crossnode-direct": "2 nodes direct x",
}
DOCS = "docs/bench.md"


def _ratio_number(speedup: float) -> str:
    return f"{speedup:.2f}x" if speedup < 10 else f"{speedup:.0f}x"


def format_versus(cell: VersusCell | None) -> str:
    """A ratio cell as rich markup: ``1.65x`` (green when the fabric is faster, red when
    slower), or why there is none (``not installed``, ``failed``, ``n/a``...)."""
    if cell is None:
        return ""
    if cell.speedup is None:
        return f"[yellow]{cell.missing}[/yellow]"
    colour = "green" if cell.speedup >= 1 else "red"
    return f"[{colour}]{_ratio_number(cell.speedup)}[/{colour}]"


def format_spread(low_us: float, high_us: float) -> str:
    """``276-334 µs`` when both ends share a unit, else ``980 µs-1.1 ms``."""
    low, high = format_latency(low_us), format_latency(high_us)
    low_num, _, low_unit = low.partition(" ")
    high_num, _, high_unit = high.partition(" ")
    if low_unit == high_unit:
        return f"{low_num}-{high_num} {high_unit}"
    return f"{low}-{high}"


@dataclass(frozen=True)
class _Layout:
    """Which columns a table shows; from the widest to the narrowest."""

    case_column: bool
    """A case column (else each case is a heading row of its own)."""
    tails: bool
    """p99.9 and max (always in the JSON and the report)."""
    spread_column: bool
    """The spread in its own column (else on a second line under the p50)."""
    p99: bool = True


_LAYOUTS = (
    _Layout(case_column=True, tails=True, spread_column=True),
    _Layout(case_column=True, tails=False, spread_column=True),
    _Layout(case_column=False, tails=True, spread_column=True),
    _Layout(case_column=False, tails=False, spread_column=True),
    _Layout(case_column=False, tails=False, spread_column=False),
    _Layout(case_column=False, tails=False, spread_column=False, p99=False),
)


def results_table(record: RunRecord, *, wide: bool = True, width: int | None = None) -> Table:
    """Every case of ``record``: p50 with the spread of the repeats' p50s, tail percentiles,
    and on each fabric row how many times faster it is than aiohttp and than NATS on the
    same case (p50 / p50, >1: the fabric wins), or why that baseline has no number.

    With ``width`` (the terminal's), the widest layout that fits it without cutting a cell is
    chosen: p99.9 and max go first, then the case column (cases become heading rows), then
    the spread moves under the p50, then p99. The ratio columns always stay. ``wide=False``
    leaves out p99.9 and max whatever the width.
    """
    layouts = [layout for layout in _LAYOUTS if wide or not layout.tails]
    if width is None:
        return _results_table(record, layouts[0])
    measure = Console(width=10_000)
    for layout in layouts:
        table = _results_table(record, layout)
        if Measurement.get(measure, measure.options, table).maximum <= width:
            return table
    # Nothing fits (a very narrow terminal): the narrowest layout, wrapping cells instead of
    # cutting them.
    table = _results_table(record, layouts[-1])
    for column in table.columns:
        column.no_wrap = False
        column.overflow = "fold"
    return table


def _results_table(record: RunRecord, layout: _Layout) -> Table:
    versus = record_versus(record)
    table = Table(
        title="fabric bench: p50 is the median over repeats, spread the min-max of their p50s",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns: list[tuple[str, str]] = [("case", "left")] if layout.case_column else []
    columns += [("system", "left"), ("p50", "right")]
    if layout.spread_column:
        columns.append(("spread", "right"))
    if layout.p99:
        columns.append(("p99", "right"))
    if layout.tails:
        columns += [("p99.9", "right"), ("max", "right")]
    columns += [(VERSUS_HEADERS.get(b, f"vs {b}"), "right") for b in VERSUS]
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    last_case = None
    for outcome in _ordered(record.outcomes):
        first = outcome.case != last_case
        if last_case is not None and first:
            table.add_section()
        last_case = outcome.case
        if first and not layout.case_column:
            table.add_row(f"[bold]{outcome.case}[/bold]", *[""] * (len(columns) - 1))
        p50, spread, p99, p999, top = _cells(outcome)
        cells = [outcome.case if first else ""] if layout.case_column else []
        cells.append(outcome.system if layout.case_column else f"  {outcome.system}")
        if layout.spread_column:
            cells += [p50, spread]
        else:
            cells.append(f"{p50}\n[dim]{spread}[/dim]" if spread else p50)
        if layout.p99:
            cells.append(p99)
        if layout.tails:
            cells += [p999, top]
        row = versus.get((outcome.case, outcome.system))
        cells += [format_versus(cell) for cell in row] if row else [""] * len(VERSUS)
        table.add_row(*cells)
    return table


def results_notes(record: RunRecord, summaries: dict[str, str] | None = None) -> Text:
    """What the ratio columns and the case names mean, and where the details are."""
    headers = " / ".join(VERSUS_HEADERS.get(b, f"vs {b}") for b in VERSUS)
    lines = [
        f"{headers}: on each fabric row ({', '.join(s for s in SUBJECTS)}), how many times "
        "faster it is than that system on the same case in this run (p50/p50, >1: faster; "
        "p99 ratios in --json and --report)"
    ]
    scenarios: list[str] = []
    for outcome in record.outcomes:
        if outcome.scenario not in scenarios:
            scenarios.append(outcome.scenario)
    if summaries is None:
        from bench.scenarios import registered

        summaries = {name: s.summary for name, s in registered().items()}
    lines.append("cases (scenario/size or count):")
    lines += [f"  {name}: {summaries[name]}" for name in scenarios if name in summaries]
    lines.append(f"every column and scenario is explained in {DOCS}")
    return Text("\n".join(lines), style="dim")


def summary_table(record: RunRecord) -> Table | None:
    """For each case and fabric mode: against the best peer broker and the best HTTP stack,
    as "x faster/slower" (None when there is nothing to compare)."""
    lines = summary_lines(ratios(record.outcomes))
    if not lines:
        return None
    table = Table(
        title="summary: each fabric mode against the fastest peer (NATS, Zenoh) and HTTP",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("case", "fabric", "vs best peer", "vs best HTTP"):
        table.add_column(column, overflow="fold")
    for line in lines:
        cells = [line.case, RATIO_HEADERS.get(line.subject, line.subject).rstrip(" x")]
        for versus in (line.peer, line.http):
            if versus is None:
                cells.append("")
            else:
                colour = "green" if versus.speedup >= 1 else "red"
                cells.append(
                    f"[{colour}]{times_text(versus.speedup)}[/{colour}] than {versus.baseline}"
                )
        table.add_row(*cells)
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
        format_spread(s["p50_min_us"], s["p50_max_us"]),
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
        table.add_column(column, overflow="fold")
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
        table.add_column(column, overflow="fold")
    for s in rows:
        table.add_row(
            s.label, s.status, short_reason(s.reason), s.hint if s.status == "skipped" else ""
        )
    return table

"""``fabric bench``: the fabric against HTTP REST, NATS and Zenoh, measured in one run.

``bench_command`` is a typer command (the fabric CLI registers it as ``bench``); ``python -m
bench`` runs it on its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress

from bench._harness import FULL, QUICK
from bench._plan import parse_selection
from bench._results import RunRecord, build_document, validate_document
from bench._runner import RunConfig, run_bench
from bench._table import (
    problems_table,
    results_notes,
    results_table,
    skipped_table,
    summary_table,
)
from bench.scenarios import registered
from bench.systems import system_names
from fabric._help import hide_flag_types
from fabric.errors import ConfigError

__all__ = ["app", "bench_command", "main"]


class _Bars:
    """Progress bars, one per system, advanced after every repeat of every case."""

    def __init__(self, progress: RichProgress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def system_started(self, name: str, label: str, steps: int) -> None:
        self._tasks[name] = self._progress.add_task(label, total=steps, case="starting")

    def step(self, name: str, case: str) -> None:
        self._progress.update(self._tasks[name], advance=1, case=case)

    def system_finished(self, name: str, status: str) -> None:
        task = self._tasks.get(name)
        if task is not None:
            total = self._progress.tasks[task].total
            self._progress.update(task, completed=total, case=status)


hide_flag_types()
_SCENARIOS_HELP = f"comma list of scenarios, or 'all': {', '.join(registered())}"
_SYSTEMS_HELP = f"comma list of systems, or 'all': {', '.join(system_names())}"


def bench_command(
    ctx: typer.Context,
    scenarios: Annotated[str, typer.Option("--scenarios", help=_SCENARIOS_HELP)] = "all",
    systems: Annotated[str, typer.Option("--systems", help=_SYSTEMS_HELP)] = "all",
    quick: Annotated[
        bool, typer.Option("--quick", help="smoke run: tiny counts, under a minute")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write every number and the machine here")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="write an HTML report with plots here")
    ] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", min=1, max=20, help="repeats of each case")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="measure this fabric node instead of starting one"),
    ] = None,
) -> None:
    """Measure the fabric against HTTP (FastAPI, aiohttp), NATS and Zenoh on this machine.

    All systems run every scenario in one run; ratios, then a summary. Details: docs/bench.md.

    Optional systems that are not installed are skipped with an install hint.
    \f
    Raises:
        typer.Exit: code 2 for a bad selection, 1 when a system or case failed.
    """
    if ctx.invoked_subcommand is not None:
        return  # `fabric bench load ...`: the subcommand runs instead
    console = Console()
    try:
        scenario_names = parse_selection(scenarios, list(registered()), "scenarios")
        system_list = parse_selection(systems, system_names(), "systems")
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    profile = QUICK if quick else FULL
    if repeats is not None:
        profile = profile.with_total_repeats(repeats)
    config = RunConfig(scenario_names, system_list, profile, fabric_url=url)
    with RichProgress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[dim]{task.fields[case]}"),
        console=console,
        transient=False,
    ) as progress:
        record = asyncio.run(run_bench(config, _Bars(progress)))
    print_results(console, record)
    console.print(
        f"[dim]{record.machine['cpu_model']}, {record.machine['cores']} cores, "
        f"Python {record.machine['python']}; run took {record.duration_s:.0f} s; "
        f"load average {record.machine.get('load_average_start')} at the start, "
        f"{record.machine.get('load_average_end')} at the end[/dim]"
    )
    document = build_document(record)
    problems = validate_document(document)
    if problems:  # a bug in the bench, not in a system: say it loudly
        console.print(f"[red]result document invalid: {problems[:5]}[/red]")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2))
        console.print(f"JSON written to {json_path}")
    if report is not None:
        from bench._report import write_report

        index = write_report(document, report)
        console.print(f"report written to {index}")
    if problems or _failed(document):
        raise typer.Exit(1)


def print_results(console: Console, record: RunRecord) -> None:
    """The results table laid out for ``console``'s width, its notes, what was not measured,
    and the summary last (the lines a reader looks at first when the run ends)."""
    console.print(results_table(record, width=console.width))
    console.print(results_notes(record))
    for extra in (problems_table(record), skipped_table(record), summary_table(record)):
        if extra is not None:
            console.print(extra)


def _failed(document: dict[str, Any]) -> bool:
    return any(s["status"] == "failed" for s in document["systems"]) or any(
        r["status"] == "failed" for r in document["results"]
    )


def load_command(
    subject: Annotated[str, typer.Argument(help="Subject your responders serve.")],
    rate: Annotated[
        float, typer.Option(min=0, help="Requests per second in total (0: as fast as possible).")
    ] = 0.0,
    size: Annotated[int, typer.Option(min=0, help="Payload bytes per request.")] = 64,
    duration: Annotated[
        float, typer.Option(min=0.01, max=3600, help="Seconds to run.")
    ] = 5.0,
    concurrency: Annotated[
        int, typer.Option(min=1, max=4096, help="Requests in flight at once.")
    ] = 4,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per request.")] = 5.0,
    url: Annotated[
        str | None, typer.Option(help="Node URL (default: FABRIC_URL or the local node).")
    ] = None,
) -> None:
    """Drive SUBJECT's responders and print an HDR latency table (like nats bench).

    With --rate the load is open-loop and latency counts from each request's intended send
    time (no coordinated omission).
    \f
    Raises:
        typer.Exit: 1 when the node is unreachable or no request got a reply.
    """
    from bench.load import LoadPlan, load_table, run_load
    from fabric.errors import FabricError
    from fabric.subjects import validate_subject
    from sdk import connect

    console = Console()
    try:
        validate_subject(subject)
    except FabricError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]fabric bench load:[/red] {exc}")
        raise typer.Exit(2) from None
    plan = LoadPlan(subject, rate, size, duration, concurrency, timeout)

    async def go() -> Any:
        async with connect("fabric-bench-load", url, reconnect=False) as agent:
            return await run_load(agent, plan)

    try:
        result = asyncio.run(go())
    except FabricError as exc:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]fabric bench load:[/red] {type(exc).__name__}: {exc}"
        )
        raise typer.Exit(1) from None
    console.print(load_table(result))
    if result.ok == 0:
        raise typer.Exit(1)


def make_app() -> typer.Typer:
    """``bench`` as a group: no subcommand runs the comparison, ``load`` drives a subject."""
    group = typer.Typer(add_completion=False, invoke_without_command=True)
    group.callback()(bench_command)
    group.command(name="load")(load_command)
    return group


app = make_app()


def main() -> None:
    """Entry point of ``python -m bench``."""
    app(prog_name="fabric bench" if "fabric" in sys.argv[0] else "python -m bench")

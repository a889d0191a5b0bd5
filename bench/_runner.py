"""Runs the selected scenarios against the selected systems, one system at a time.

Systems that cannot run here are *skipped* up front. Then, for each round of the profile and
each system in turn: start its environment (servers), start its worker processes in parallel
and wait for each one's ready line, open a client, run every scenario, and always tear
everything down, in reverse, bounded. A system that fails is not tried in later rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench._harness import Profile, ScenarioContext
from bench._machine import describe_machine, load_average
from bench._outcome import CaseOutcome
from bench._plan import ProcPlan, plan_layout
from bench._procs import Child, start_child, worker_argv
from bench._results import RunRecord, SystemStatus
from bench._scenario import Scenario
from bench.scenarios import registered
from bench.systems import SYSTEMS, Client, System, WorkerInfo, get_system
from fabric.errors import ConnectionLost

__all__ = ["Progress", "RunConfig", "run_bench", "steps_for"]

_WORKER_READY_S = 60.0
_BASE_PACKAGES = ("agent-fabric", "hdrhistogram", "uvloop", "rich", "typer", "matplotlib")


class Progress(Protocol):
    """What the runner reports while it works (the CLI draws progress bars from it)."""

    def system_started(self, name: str, label: str, steps: int) -> None: ...

    def step(self, name: str, case: str) -> None: ...

    def system_finished(self, name: str, status: str) -> None: ...


class _Silent:
    def system_started(self, name: str, label: str, steps: int) -> None:
        pass

    def step(self, name: str, case: str) -> None:
        pass

    def system_finished(self, name: str, status: str) -> None:
        pass


@dataclass(frozen=True)
class RunConfig:
    """What to run: scenario and system names (already validated), the profile, options."""

    scenarios: Sequence[str]
    systems: Sequence[str]
    profile: Profile
    fabric_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenarios": list(self.scenarios),
            "systems": list(self.systems),
            "profile": self.profile.name,
            "repeats": self.profile.total_repeats,
            "rounds": self.profile.rounds,
            "budget_s": self.profile.budget_s,
            "scale": self.profile.scale,
            "fabric_url": self.fabric_url,
        }


def _systems_in_run(config: RunConfig) -> list[str]:
    """Chosen systems plus every reference row that applies to a chosen scenario."""
    # A system limited to some scenarios takes part only when one of them is selected.
    names = [
        n
        for n in config.systems
        if not SYSTEMS[n].only_scenarios or set(SYSTEMS[n].only_scenarios) & set(config.scenarios)
    ]
    for name, cls in SYSTEMS.items():
        if cls.reference and name not in names and set(cls.only_scenarios) & set(config.scenarios):
            names.append(name)
    return names


def _scenarios_for(system: System, scenarios: Sequence[Scenario]) -> list[Scenario]:
    if not system.only_scenarios:
        return list(scenarios)
    return [s for s in scenarios if s.name in system.only_scenarios]


def steps_for(scenarios: Sequence[Scenario], profile: Profile) -> int:
    """Progress steps of one system: one per repeat of every case, over all rounds."""
    return sum(s.cases for s in scenarios) * profile.total_repeats


async def run_bench(config: RunConfig, progress: Progress | None = None) -> RunRecord:
    """Measure every selected scenario for every selected system; never raises for a system
    that cannot run or fails (that is recorded), only for bugs in the bench itself."""
    progress = progress or _Silent()
    all_scenarios = registered()
    scenarios = [all_scenarios[name] for name in config.scenarios]
    names = _systems_in_run(config)
    packages = set(_BASE_PACKAGES)
    for name in names:
        packages.update(SYSTEMS[name].packages)
    record = RunRecord(
        config=config.to_json(),
        machine=describe_machine(packages),
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    started = time.perf_counter()
    systems = [get_system(name, {"url": config.fabric_url}) for name in names]
    for system in systems:
        status = SystemStatus(
            name=system.name,
            label=system.label,
            status="ok",
            hint=system.hint,
            reference=system.reference,
            versions=system.versions(),
        )
        record.systems.append(status)
        reason = system.skip_reason()
        if reason is not None:
            status.status, status.reason = "skipped", reason
            progress.system_finished(system.name, "skipped")
        else:
            steps = steps_for(_scenarios_for(system, scenarios), config.profile)
            progress.system_started(system.name, system.label, steps)
    statuses = {s.name: s for s in record.systems}
    with tempfile.TemporaryDirectory(prefix="fabric-bench-") as tmp:
        for round_ in range(config.profile.rounds):
            for system in systems:
                status = statuses[system.name]
                if status.status != "ok":
                    continue
                workdir = Path(tmp) / f"{system.name}-{round_}"
                workdir.mkdir()
                try:
                    await _run_system(
                        system,
                        _scenarios_for(system, scenarios),
                        config.profile,
                        workdir,
                        record.outcomes,
                        progress,
                    )
                except Exception as exc:
                    status.status = "failed"
                    status.reason = f"round {round_ + 1}: {type(exc).__name__}: {exc}"[:2000]
                    progress.system_finished(system.name, "failed")
    for status in record.systems:
        if status.status == "ok":
            progress.system_finished(status.name, "ok")
    record.duration_s = time.perf_counter() - started
    record.machine["load_average_end"] = load_average()
    return record


async def _run_system(
    system: System,
    scenarios: Sequence[Scenario],
    profile: Profile,
    workdir: Path,
    outcomes: list[CaseOutcome],
    progress: Progress,
) -> None:
    roles = {role for s in scenarios for role in s.roles}
    layout = plan_layout(roles) if not system.reference else []
    children: list[Child] = []
    client: Client | None = None
    try:
        env = await system.start_env(workdir)
        children, infos = await _start_workers(system, layout, env)
        client = await system.open_client(env, layout, infos)
        for scenario in scenarios:
            await _check_alive(children)
            ctx = ScenarioContext(
                scenario=scenario.name,
                system=system.name,
                client=client,
                profile=profile,
                outcomes=outcomes,
                on_repeat=lambda case: progress.step(system.name, case),
            )
            try:
                await scenario.fn(ctx)
            except Exception as exc:
                # A bug in the scenario function itself (cases record their own failures):
                # one row per scenario and system, whatever the round.
                if not any(o.case == scenario.name and o.system == system.name for o in outcomes):
                    outcomes.append(
                        CaseOutcome(
                            scenario.name,
                            scenario.name,
                            system.name,
                            "latency",
                            status="failed",
                            reason=f"{type(exc).__name__}: {exc}"[:500],
                        )
                    )
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 10)
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(system.stop_env(), 15)


async def _start_workers(
    system: System, layout: Sequence[ProcPlan], env: dict[str, Any]
) -> tuple[list[Child], list[WorkerInfo]]:
    env_json = json.dumps(env)
    started = await asyncio.gather(
        *(
            start_child(
                f"{system.name} worker {plan.index}",
                worker_argv(system.name, json.dumps(plan.to_json()), env_json),
                ready="ready ",
                timeout_s=_WORKER_READY_S,
            )
            for plan in layout
        ),
        return_exceptions=True,
    )
    children = [c for c in started if isinstance(c, Child)]
    errors = [e for e in started if isinstance(e, BaseException)]
    if errors:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        raise errors[0]
    infos = [json.loads(c.ready_line.split("ready ", 1)[1]) for c in children]
    return children, infos


async def _check_alive(children: Sequence[Child]) -> None:
    for child in children:
        if child.proc.returncode is not None:
            raise ConnectionLost(
                f"{child.name} exited with {child.proc.returncode}:\n{child.describe_failure()}"
            )

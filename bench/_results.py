"""The JSON document of a run, its schema check, and the fabric's ratios against baselines.

Pure: builds and checks dictionaries; writing them is the CLI's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._outcome import CaseOutcome

__all__ = [
    "HTTP_SYSTEMS",
    "PEER_SYSTEMS",
    "SCHEMA",
    "SUBJECT",
    "SUBJECTS",
    "VERSUS",
    "RunRecord",
    "SummaryLine",
    "SystemStatus",
    "Versus",
    "VersusCell",
    "build_document",
    "ratios",
    "record_versus",
    "summary_lines",
    "times_text",
    "validate_document",
    "versus_cells",
]

SCHEMA = "agent-fabric.bench/1"
#: The system the ratios are about.
SUBJECT = "fabric"
#: Every system that gets ratios against the baselines (the fabric in each of its modes).
SUBJECTS: tuple[str, ...] = (
    SUBJECT,
    "fabric-latency",
    "fabric-crossnode",
    "fabric-crossnode-direct",
)
#: Baselines by family, for the end-of-run summary (names as in bench/systems): the HTTP
#: stacks the seed compares against, and the other brokers (the fabric's peers).
HTTP_SYSTEMS: tuple[str, ...] = ("fastapi", "aiohttp")
PEER_SYSTEMS: tuple[str, ...] = ("nats", "zenoh")
#: The baselines every fabric row of the table is compared against, one column each: the
#: HTTP stack and the broker that DESIGN.md's targets name.
VERSUS: tuple[str, ...] = ("aiohttp", "nats")


@dataclass
class SystemStatus:
    """How a system fared as a whole: ran, skipped (with hint) or failed (with reason)."""

    name: str
    label: str
    status: str
    reason: str = ""
    hint: str = ""
    reference: bool = False
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "status": self.status,
            "reason": self.reason,
            "hint": self.hint,
            "reference": self.reference,
            "versions": self.versions,
        }


@dataclass
class RunRecord:
    """Everything one run measured."""

    config: dict[str, Any]
    machine: dict[str, Any]
    started_at: str
    duration_s: float = 0.0
    systems: list[SystemStatus] = field(default_factory=list)
    outcomes: list[CaseOutcome] = field(default_factory=list)


def ratios(
    outcomes: Iterable[CaseOutcome], subjects: Sequence[str] = SUBJECTS
) -> list[dict[str, Any]]:
    """Each subject's speed-up over every baseline (a system that is not a subject), by case.

    ``speedup`` > 1 means the subject is faster: baseline p50 / subject p50 for latencies,
    subject rate / baseline rate for rates. ``speedup_min``/``speedup_max`` bound it with the
    spreads of both sides (worst and best pairing of the repeats' p50s or rates). Latencies
    also get ``speedup_p99``: baseline p99 / subject p99 (the medians over the repeats).
    """
    by_case: dict[str, dict[str, CaseOutcome]] = {}
    for outcome in outcomes:
        if outcome.status == "ok" and outcome.headline() is not None:
            by_case.setdefault(outcome.case, {})[outcome.system] = outcome
    found: list[dict[str, Any]] = []
    for case, systems in by_case.items():
        for subject in subjects:
            mine = systems.get(subject)
            if mine is None:
                continue
            for name, other in systems.items():
                if name in subjects:
                    continue
                found.append(
                    {
                        "case": case,
                        "scenario": mine.scenario,
                        "subject": subject,
                        "baseline": name,
                        **_speedup(mine, other),
                    }
                )
    return found


@dataclass(frozen=True)
class Versus:
    """One fabric mode against the fastest baseline of a family, on one case."""

    baseline: str
    speedup: float
    """> 1: the fabric mode is that many times faster; < 1: slower."""


@dataclass(frozen=True)
class SummaryLine:
    """The end-of-run summary of one case for one fabric mode."""

    case: str
    subject: str
    peer: Versus | None
    """Against the fastest peer broker (NATS, Zenoh) measured on this case, if any."""
    http: Versus | None
    """Against the fastest HTTP stack measured on this case, if any."""


def summary_lines(found: Iterable[dict[str, Any]]) -> list[SummaryLine]:
    """For each case and fabric mode (in the order of ``found``, as :func:`ratios` gives
    them): the ratio against the best peer broker and against the best HTTP stack.

    "Best" is the fastest baseline of the family, so the ratio is the least flattering one.
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in found:
        grouped.setdefault((r["case"], r["subject"]), []).append(r)
    lines = []
    for (case, subject), rows in grouped.items():
        peer = _best([r for r in rows if r["baseline"] in PEER_SYSTEMS])
        http = _best([r for r in rows if r["baseline"] in HTTP_SYSTEMS])
        if peer is not None or http is not None:
            lines.append(SummaryLine(case, subject, peer, http))
    return lines


def _best(rows: Sequence[dict[str, Any]]) -> Versus | None:
    if not rows:
        return None
    fastest = min(rows, key=lambda r: float(r["speedup"]))
    return Versus(str(fastest["baseline"]), float(fastest["speedup"]))


@dataclass(frozen=True)
class VersusCell:
    """One fabric row against one baseline of :data:`VERSUS`: the ratios, or why none."""

    baseline: str
    speedup: float | None = None
    """Baseline p50 / fabric p50 (for rates: fabric rate / baseline rate); > 1: faster."""
    speedup_p99: float | None = None
    """Baseline p99 / fabric p99 (latencies only)."""
    missing: str = ""
    """Why there is no ratio: ``not installed`` (the system was skipped), ``failed`` (it did
    not start or broke), ``not in run`` (not selected), ``n/a`` (it has no way to do the
    case), ``no result`` (the case did not run for it)."""


def versus_cells(
    found: Iterable[dict[str, Any]],
    case_status: dict[tuple[str, str], str],
    system_status: dict[str, str],
    baselines: Sequence[str] = VERSUS,
) -> dict[tuple[str, str], list[VersusCell]]:
    """For every measured fabric row, keyed ``(case, subject)``: one cell per baseline.

    ``found`` is :func:`ratios`' output; ``case_status`` maps ``(case, system)`` to the
    outcome's status; ``system_status`` maps each system of the run to ``ok``/``skipped``/
    ``failed``. Pure, and fed from a :class:`RunRecord` or a JSON document alike.
    """
    by_key = {(r["case"], r["subject"], r["baseline"]): r for r in found}
    cells: dict[tuple[str, str], list[VersusCell]] = {}
    for (case, subject), status in case_status.items():
        if subject not in SUBJECTS or status != "ok":
            continue
        row = []
        for baseline in baselines:
            ratio = by_key.get((case, subject, baseline))
            if ratio is not None:
                p99 = ratio.get("speedup_p99")
                row.append(
                    VersusCell(
                        baseline, float(ratio["speedup"]), None if p99 is None else float(p99)
                    )
                )
            else:
                row.append(VersusCell(baseline, missing=_why_missing(
                    system_status.get(baseline), case_status.get((case, baseline))
                )))
        cells[(case, subject)] = row
    return cells


def _why_missing(system: str | None, case: str | None) -> str:
    if system is None:
        return "not in run"
    if system == "skipped":
        return "not installed"
    if system == "failed" or case == "failed":
        return "failed"
    if case == "n/a":
        return "n/a"
    return "no result"


def record_versus(record: RunRecord) -> dict[tuple[str, str], list[VersusCell]]:
    """:func:`versus_cells` of a run in memory."""
    return versus_cells(
        ratios(record.outcomes),
        {(o.case, o.system): o.status for o in record.outcomes},
        {s.name: s.status for s in record.systems},
    )


def times_text(speedup: float) -> str:
    """``2.4x faster``, ``1.6x slower``, ``26x faster``: a ratio as a reader says it."""
    if speedup <= 0:
        return "n/a"
    factor = speedup if speedup >= 1 else 1 / speedup
    number = f"{factor:.2f}" if factor < 10 else f"{factor:.0f}"
    return f"{number}x {'faster' if speedup >= 1 else 'slower'}"


def _speedup(mine: CaseOutcome, other: CaseOutcome) -> dict[str, float]:
    a, b = mine.summary(), other.summary()
    if mine.kind == "latency":
        return {
            "speedup": b["p50_us"] / a["p50_us"],
            "speedup_min": b["p50_min_us"] / a["p50_max_us"],
            "speedup_max": b["p50_max_us"] / a["p50_min_us"],
            "speedup_p99": b["p99_us"] / a["p99_us"],
        }
    return {
        "speedup": a["rate"] / b["rate"],
        "speedup_min": a["rate_min"] / b["rate_max"],
        "speedup_max": a["rate_max"] / b["rate_min"],
    }


def build_document(record: RunRecord) -> dict[str, Any]:
    """The JSON document of a run (``--json``), schema :data:`SCHEMA`."""
    return {
        "schema": SCHEMA,
        "started_at": record.started_at,
        "duration_s": round(record.duration_s, 3),
        "config": record.config,
        "machine": record.machine,
        "systems": [s.to_json() for s in record.systems],
        "results": [o.to_json() for o in record.outcomes],
        "ratios": ratios(record.outcomes),
    }


_TOP: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "started_at": str,
    "duration_s": (int, float),
    "config": dict,
    "machine": dict,
    "systems": list,
    "results": list,
    "ratios": list,
}
_MACHINE = ("cpu_model", "cores", "memory_bytes", "python", "kernel", "packages")
_SYSTEM = ("name", "label", "status", "reason", "hint")
_RESULT = ("scenario", "case", "system", "kind", "unit", "status", "reason", "summary", "repeats")
_LATENCY_SUMMARY = ("p50_us", "p50_min_us", "p50_max_us", "p90_us", "p99_us", "p999_us", "max_us")
_LATENCY_REPEAT = ("count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "hdr")
_RATE_SUMMARY = ("rate", "rate_min", "rate_max")


def validate_document(doc: Any) -> list[str]:
    """Problems that make ``doc`` not a valid bench document (empty list: valid)."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        return ["document is not an object"]
    for key, kind in _TOP.items():
        if not isinstance(doc.get(key), kind):
            problems.append(f"{key}: missing or not {kind}")
    if problems:
        return problems
    if doc["schema"] != SCHEMA:
        problems.append(f"schema is {doc['schema']!r}, expected {SCHEMA!r}")
    problems += _missing(doc["machine"], _MACHINE, "machine")
    names = set()
    for i, system in enumerate(doc["systems"]):
        problems += _missing(system, _SYSTEM, f"systems[{i}]")
        if isinstance(system, dict):
            names.add(system.get("name"))
            if system.get("status") not in ("ok", "skipped", "failed"):
                problems.append(f"systems[{i}].status invalid: {system.get('status')!r}")
            if system.get("status") == "skipped" and not system.get("reason"):
                problems.append(f"systems[{i}] skipped without a reason")
    for i, result in enumerate(doc["results"]):
        problems += _check_result(result, f"results[{i}]", names)
    for i, ratio in enumerate(doc["ratios"]):
        problems += _missing(ratio, ("case", "subject", "baseline", "speedup"), f"ratios[{i}]")
    return problems


def _check_result(result: Any, where: str, systems: set[Any]) -> list[str]:
    problems = _missing(result, _RESULT, where)
    if problems:
        return problems
    if result["system"] not in systems:
        problems.append(f"{where}.system {result['system']!r} not among the systems")
    if result["kind"] not in ("latency", "rate"):
        problems.append(f"{where}.kind invalid: {result['kind']!r}")
        return problems
    if result["status"] not in ("ok", "failed", "n/a"):
        problems.append(f"{where}.status invalid: {result['status']!r}")
    if result["status"] != "ok":
        if not result["reason"]:
            problems.append(f"{where}: status {result['status']} without a reason")
        return problems
    summary_keys: Sequence[str] = _LATENCY_SUMMARY if result["kind"] == "latency" else _RATE_SUMMARY
    repeat_keys: Sequence[str] = _LATENCY_REPEAT if result["kind"] == "latency" else ("rate",)
    problems += _missing(result["summary"], summary_keys, f"{where}.summary", numeric=True)
    if not result["repeats"]:
        problems.append(f"{where}: ok without repeats")
    for j, repeat in enumerate(result["repeats"]):
        problems += _missing(repeat, repeat_keys, f"{where}.repeats[{j}]")
    return problems


def _missing(obj: Any, keys: Sequence[str], where: str, *, numeric: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} is not an object"]
    problems = [f"{where}.{k} missing" for k in keys if k not in obj]
    if numeric:
        problems += [
            f"{where}.{k} is not a number"
            for k in keys
            if k in obj and (not isinstance(obj[k], (int, float)) or isinstance(obj[k], bool))
        ]
    return problems

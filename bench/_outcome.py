"""One measured case of one system: what the runner collects and the report prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bench._stats import LatencySummary, fold_rates, fold_repeats

__all__ = ["CaseOutcome", "Kind", "Status"]

Kind = Literal["latency", "rate"]
Status = Literal["ok", "failed", "n/a"]


@dataclass
class CaseOutcome:
    """Every repeat of one case for one system, and how it ended."""

    scenario: str
    case: str
    system: str
    kind: Kind
    status: Status = "ok"
    reason: str = ""
    unit: str = "us"
    """``us`` for latencies; for rates the rate's unit (``msgs/s``)."""
    runs: list[LatencySummary] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Median and spread over the repeats (empty when nothing was measured)."""
        if self.kind == "latency" and self.runs:
            return fold_repeats(self.runs).as_dict()
        if self.kind == "rate" and self.rates:
            return fold_rates(self.rates).as_dict()
        return {}

    def headline(self) -> float | None:
        """The number ratios compare: p50 (µs) for latencies, the median rate for rates."""
        summary = self.summary()
        if not summary:
            return None
        return float(summary["p50_us"] if self.kind == "latency" else summary["rate"])

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "case": self.case,
            "system": self.system,
            "kind": self.kind,
            "unit": self.unit,
            "status": self.status,
            "reason": self.reason,
            "summary": self.summary(),
            "repeats": [r.as_dict() for r in self.runs]
            if self.kind == "latency"
            else [{"rate": r} for r in self.rates],
        }

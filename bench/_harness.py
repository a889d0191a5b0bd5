"""The measurement loops and the context a scenario function receives.

Loops are closed (one operation in flight, the next sent when the previous returned), so the
recorded latency is the operation's own: there is no schedule to fall behind and coordinated
omission does not apply. Every loop stops at ``count`` operations or ``budget_s`` seconds,
whichever comes first, and the whole case sits under a hard timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hdrh.histogram import HdrHistogram

from bench._outcome import CaseOutcome, Kind
from bench._stats import new_histogram, summarise
from bench.systems._base import Client
from fabric.errors import RemoteProtocolError, Timeout

__all__ = ["CaseParams", "Profile", "ScenarioContext"]

Check = Callable[[Any], bool]

#: Warm-up is bounded by this share of the case's time budget as well as by its count.
_WARMUP_SHARE = 0.3
Clock = Callable[[], int]


@dataclass(frozen=True)
class CaseParams:
    """Bounds of one case: warm-up operations (not recorded, at most 30% of the budget in
    time), then ``count`` operations or ``budget_s`` seconds, whichever comes first."""

    warmup: int
    count: int
    budget_s: float


@dataclass(frozen=True)
class Profile:
    """How hard a run pushes: ``full`` for numbers, ``quick`` for a smoke run.

    A run makes ``rounds`` passes over every system, each measuring every case ``repeats``
    times. Several rounds interleave the systems in time, so background load on a shared
    machine lands on one repeat of every system instead of on all repeats of one.
    """

    name: str
    repeats: int
    """Repeats of each case within one round."""
    rounds: int
    scale: float
    """Fraction of each scenario's nominal counts."""
    budget_s: float
    """Time bound of one repeat of one case."""

    def params(self, count: int, warmup: int, *, budget_s: float | None = None) -> CaseParams:
        """Scenario's nominal counts scaled to this profile (at least 3 recorded, 1 warm-up)."""
        return CaseParams(
            warmup=max(1, int(warmup * self.scale)),
            count=max(3, int(count * self.scale)),
            budget_s=self.budget_s if budget_s is None else min(budget_s, self.budget_s * 2),
        )

    @property
    def total_repeats(self) -> int:
        """Repeats of each case over the whole run."""
        return self.repeats * self.rounds

    def with_total_repeats(self, total: int) -> Profile:
        """This profile with ``total`` repeats: one per round for the full profile (most
        interleaving), all in one round for a single-round profile (no extra start-ups)."""
        if self.rounds == 1:
            return replace(self, repeats=total)
        return replace(self, repeats=1, rounds=total)


FULL = Profile("full", repeats=1, rounds=3, scale=1.0, budget_s=1.5)
QUICK = Profile("quick", repeats=2, rounds=1, scale=0.04, budget_s=0.2)


def _run_blocking_loop(
    fn: Callable[..., Any], args: tuple[Any, ...], check: Check, params: CaseParams, clock: Clock
) -> HdrHistogram:
    hist = new_histogram()
    warm_until = clock() + int(params.budget_s * _WARMUP_SHARE * 1e9)
    for _ in range(params.warmup):
        _checked(fn(*args), check)
        if clock() >= warm_until:
            break
    deadline = clock() + int(params.budget_s * 1e9)
    for _ in range(params.count):
        t0 = clock()
        result = fn(*args)
        t1 = clock()
        _checked(result, check)
        hist.record_value(max(1, t1 - t0))
        if t1 >= deadline:
            break
    return hist


async def _run_async_loop(
    fn: Callable[..., Any], args: tuple[Any, ...], check: Check, params: CaseParams, clock: Clock
) -> HdrHistogram:
    hist = new_histogram()
    warm_until = clock() + int(params.budget_s * _WARMUP_SHARE * 1e9)
    for _ in range(params.warmup):
        _checked(await fn(*args), check)
        if clock() >= warm_until:
            break
    deadline = clock() + int(params.budget_s * 1e9)
    for _ in range(params.count):
        t0 = clock()
        result = await fn(*args)
        t1 = clock()
        _checked(result, check)
        hist.record_value(max(1, t1 - t0))
        if t1 >= deadline:
            break
    return hist


def _checked(result: Any, check: Check) -> None:
    if not check(result):
        raise RemoteProtocolError(f"wrong answer from the system under test: {result!r:.200}")


class ScenarioContext:
    """What a scenario function gets: the client, the profile, and the two case recorders."""

    def __init__(
        self,
        *,
        scenario: str,
        system: str,
        client: Client,
        profile: Profile,
        outcomes: list[CaseOutcome],
        on_repeat: Callable[[str], None] = lambda _case: None,
        case_timeout_s: float = 120.0,
        clock: Clock = time.perf_counter_ns,
    ) -> None:
        self.scenario = scenario
        self.system = system
        self.client = client
        self.profile = profile
        self.outcomes = outcomes
        self._on_repeat = on_repeat
        self._case_timeout_s = case_timeout_s
        self._clock = clock

    async def latency_case(
        self,
        case: str,
        params: CaseParams,
        fn: Callable[..., Any],
        *args: Any,
        check: Check,
    ) -> CaseOutcome:
        """Measure ``fn(*args)`` for every repeat; a failure is recorded, never raised.

        Later rounds add their repeats to the outcome of the first; a case that failed or
        does not apply is not tried again.
        """
        outcome = self._outcome(case, "latency", "us")
        for repeat in range(self.profile.repeats if outcome.status == "ok" else 0):
            try:
                hist = await self._bounded(self._one_latency_run(fn, args, check, params))
            except NotImplementedError as exc:
                outcome.status, outcome.reason = "n/a", str(exc) or "not supported"
                break
            except Exception as exc:
                outcome.status, outcome.reason = "failed", _describe(exc, repeat)
                break
            finally:
                self._on_repeat(case)
            outcome.runs.append(summarise(hist))
        return outcome

    async def rate_case(
        self,
        case: str,
        params: CaseParams,
        fn: Callable[..., Any],
        *args: Any,
        unit: str = "msgs/s",
    ) -> CaseOutcome:
        """Run ``fn(*args)`` (returns ``(delivered, seconds)``) per repeat; record the rates."""
        outcome = self._outcome(case, "rate", unit)
        for repeat in range(self.profile.repeats if outcome.status == "ok" else 0):
            try:
                delivered, seconds = await self._bounded(self._call(fn, args))
                if delivered <= 0 or seconds <= 0:
                    raise RemoteProtocolError(f"nothing delivered ({delivered} in {seconds} s)")
            except NotImplementedError as exc:
                outcome.status, outcome.reason = "n/a", str(exc) or "not supported"
                break
            except Exception as exc:
                outcome.status, outcome.reason = "failed", _describe(exc, repeat)
                break
            finally:
                self._on_repeat(case)
            outcome.rates.append(delivered / seconds)
        return outcome

    def _outcome(self, case: str, kind: Kind, unit: str) -> CaseOutcome:
        for outcome in self.outcomes:
            if outcome.case == case and outcome.system == self.system:
                return outcome
        outcome = CaseOutcome(self.scenario, case, self.system, kind, unit=unit)
        self.outcomes.append(outcome)
        return outcome

    async def _one_latency_run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], check: Check, params: CaseParams
    ) -> HdrHistogram:
        if self.client.blocking:
            return await asyncio.to_thread(_run_blocking_loop, fn, args, check, params, self._clock)
        return await _run_async_loop(fn, args, check, params, self._clock)

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self.client.blocking:
            return await asyncio.to_thread(fn, *args)
        return await fn(*args)

    async def _bounded(self, work: Any) -> Any:
        try:
            async with asyncio.timeout(self._case_timeout_s):
                return await work
        except TimeoutError:
            raise Timeout(f"case did not finish within {self._case_timeout_s:.0f} s") from None


def _describe(exc: BaseException, repeat: int) -> str:
    return f"repeat {repeat + 1}: {type(exc).__name__}: {exc}"[:500]

"""Scenario bookkeeping: layouts, selection parsing, the scenario registry."""

from __future__ import annotations

import pytest

from bench._harness import FULL, QUICK
from bench._plan import ProcPlan, agents_with_role, parse_selection, plan_layout
from bench._runner import RunConfig, _systems_in_run, steps_for
from bench._scenario import _REGISTRY, scenario
from bench.scenarios import registered
from bench.systems import system_names
from fabric.errors import ConfigError

ALL_ROLES = ("echo", "fan", "map", "big", "stream", "sink")


def test_full_layout_spreads_children_and_workers_over_two_processes() -> None:
    layout = plan_layout(ALL_ROLES)
    assert [p.index for p in layout] == [0, 1, 2, 3]
    fans = agents_with_role(layout, "fan")
    maps = agents_with_role(layout, "map")
    bigs = agents_with_role(layout, "big")
    assert len(fans) == 16 and len(maps) == 8 and len(bigs) == 4
    assert sum(1 for a in fans if a.name.startswith("p0")) == 8
    assert sum(1 for a in fans if a.name.startswith("p1")) == 8
    assert sum(1 for a in maps if a.name.startswith("p0")) == 4
    # every big receiver is alone in its process: delivery crosses a process boundary
    assert sorted(a.name[:2] for a in bigs) == ["p0", "p1", "p2", "p3"]
    for role in ("echo", "stream", "sink"):
        assert [a.name for a in agents_with_role(layout, role)] == ["p0a0"]
    names = [a.name for p in layout for a in p.agents]
    assert len(names) == len(set(names))


def test_small_layouts_start_only_what_they_need() -> None:
    assert plan_layout([]) == []
    (only,) = plan_layout(["echo"])
    assert [(a.name, a.roles) for a in only.agents] == [("p0a0", ("echo",))]
    assert len(plan_layout(["map"])) == 2
    assert len(plan_layout(["big"])) == 4


def test_layout_refuses_unknown_roles_and_odd_splits() -> None:
    with pytest.raises(ConfigError, match="unknown roles"):
        plan_layout(["echo", "teleport"])
    with pytest.raises(ConfigError):
        plan_layout(["fan"], fan_children=15)


def test_plans_survive_the_trip_to_a_worker() -> None:
    for plan in plan_layout(ALL_ROLES):
        assert ProcPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ConfigError):
        ProcPlan.from_json({"index": 0})


def test_parse_selection() -> None:
    known = ["rr", "fanout", "map"]
    assert parse_selection(None, known, "scenarios") == known
    assert parse_selection("all", known, "scenarios") == known
    assert parse_selection(" ", known, "scenarios") == known
    # order follows the registry, duplicates and blanks vanish
    assert parse_selection("map, rr,rr,", known, "scenarios") == ["rr", "map"]
    with pytest.raises(ConfigError, match=r"unknown scenarios: bogus.*choose from rr"):
        parse_selection("rr,bogus", known, "scenarios")


def test_registry_holds_the_built_in_scenarios_in_order() -> None:
    names = list(registered())
    assert names[:6] == ["rr", "fanout", "map", "bigfan", "stream", "throughput"]
    assert registered()["rr"].cases == 3
    assert steps_for([registered()["rr"], registered()["fanout"]], FULL) == 4 * 3


def test_adding_a_scenario_is_one_function_and_names_are_unique() -> None:
    registered()
    try:

        @scenario("extra-test", roles=("echo",), summary="test only")
        async def extra(ctx: object) -> None:
            return None

        assert registered()["extra-test"].roles == ("echo",)
        with pytest.raises(ConfigError, match="twice"):
            scenario("extra-test", roles=(), summary="again")(extra)
        with pytest.raises(ConfigError, match="unknown roles"):
            scenario("extra-bad", roles=("teleport",), summary="bad")(extra)
    finally:
        _REGISTRY.pop("extra-test", None)
        _REGISTRY.pop("extra-bad", None)


def test_systems_and_profiles() -> None:
    assert system_names() == [
        "fabric",
        "fabric-latency",
        "fabric-crossnode",
        "fabric-crossnode-direct",
        "fastapi",
        "aiohttp",
        "nats",
        "zenoh",
    ]
    assert "memcpy" in system_names(include_reference=True)
    quick = QUICK.params(4000, 300)
    assert quick.count < FULL.params(4000, 300).count
    assert quick.count >= 3 and quick.warmup >= 1 and quick.budget_s <= 1.0
    # the full profile spreads its repeats over rounds; the quick one starts systems once
    assert (FULL.repeats, FULL.rounds) == (1, 3)
    assert FULL.with_total_repeats(5).rounds == 5 and FULL.with_total_repeats(5).repeats == 1
    assert (
        QUICK.with_total_repeats(4).rounds == 1 and QUICK.with_total_repeats(4).total_repeats == 4
    )


def test_scenario_limited_and_reference_systems_join_only_when_they_apply() -> None:
    every = system_names()
    assert _systems_in_run(RunConfig(["fanout"], every, QUICK)) == [
        "fabric",
        "fabric-crossnode",
        "fabric-crossnode-direct",
        "fastapi",
        "aiohttp",
        "nats",
        "zenoh",
    ]
    with_rr = _systems_in_run(RunConfig(["rr"], every, QUICK))
    assert "fabric-latency" in with_rr and "memcpy" not in with_rr
    assert with_rr[-2:] == ["floor-unix", "floor-tcp"]  # the machine's floor for rr
    assert "floor-unix" not in _systems_in_run(RunConfig(["fanout"], every, QUICK))
    with_big = _systems_in_run(RunConfig(["bigfan"], ["aiohttp"], QUICK))
    assert with_big == ["aiohttp", "memcpy"]

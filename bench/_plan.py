"""Pure bookkeeping: which scenarios and systems a run selects, and where the agents live.

No I/O: the runner asks :func:`plan_layout` how many worker processes to start and which roles
each agent in them plays, and :func:`parse_selection` what ``--scenarios``/``--systems`` mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fabric.errors import ConfigError

__all__ = [
    "ROLES",
    "AgentPlan",
    "ProcPlan",
    "agents_with_role",
    "parse_selection",
    "plan_layout",
]

#: Every role an agent can play; each scenario needs some of them.
#: echo: replies with the request; fan: a fan-out child; map: a map worker (one queue group);
#: big: checks a big payload; stream: streams chunks; sink: counts one-way messages.
ROLES: tuple[str, ...] = ("echo", "fan", "map", "big", "stream", "sink")

FAN_CHILDREN = 16
MAP_WORKERS = 8
BIG_AGENTS = 4


@dataclass(frozen=True)
class AgentPlan:
    """One agent in a worker process."""

    name: str
    roles: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "roles": list(self.roles)}


@dataclass(frozen=True)
class ProcPlan:
    """One worker process and the agents it hosts."""

    index: int
    agents: tuple[AgentPlan, ...]

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "agents": [a.to_json() for a in self.agents]}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> ProcPlan:
        """Rebuild a plan sent to a worker.

        Raises:
            ConfigError: the document is not a plan.
        """
        try:
            index = doc["index"]
            agents = doc["agents"]
            assert isinstance(index, int) and isinstance(agents, list)
            return cls(
                index=index,
                agents=tuple(AgentPlan(str(a["name"]), tuple(a["roles"])) for a in agents),
            )
        except (KeyError, TypeError, AssertionError) as exc:
            raise ConfigError(f"bad worker plan: {doc!r}") from exc


def plan_layout(
    roles: Iterable[str],
    *,
    fan_children: int = FAN_CHILDREN,
    map_workers: int = MAP_WORKERS,
    big_agents: int = BIG_AGENTS,
) -> list[ProcPlan]:
    """Worker processes and agents for a set of roles.

    Fan-out children and map workers are spread evenly over two processes (the scenarios
    say "over 2 processes"); each big-payload receiver gets a process of its own, so
    delivering to it really crosses a process boundary; echo, stream and sink live on the
    first agent of process 0. No roles → no processes.

    Raises:
        ConfigError: an unknown role, or a count that cannot be spread as asked.
    """
    wanted = set(roles)
    unknown = wanted - set(ROLES)
    if unknown:
        raise ConfigError(f"unknown roles: {sorted(unknown)}")
    if fan_children % 2 or map_workers % 2 or big_agents < 1:
        raise ConfigError("fan-out children and map workers must split over two processes")
    if not wanted:
        return []
    procs = 1
    if wanted & {"fan", "map"}:
        procs = 2
    if "big" in wanted:
        procs = max(procs, big_agents)
    per_proc: list[list[set[str]]] = [[] for _ in range(procs)]

    def give(proc: int, slot: int, role: str) -> None:
        agents = per_proc[proc]
        while len(agents) <= slot:
            agents.append(set())
        agents[slot].add(role)

    for role in ("echo", "stream", "sink"):
        if role in wanted:
            give(0, 0, role)
    if "fan" in wanted:
        for i in range(fan_children):
            give(i % 2, i // 2, "fan")
    if "map" in wanted:
        for i in range(map_workers):
            give(i % 2, i // 2, "map")
    if "big" in wanted:
        for i in range(big_agents):
            give(i, 0, "big")
    return [
        ProcPlan(
            index=p,
            agents=tuple(
                AgentPlan(f"p{p}a{j}", tuple(r for r in ROLES if r in agent_roles))
                for j, agent_roles in enumerate(agents)
            ),
        )
        for p, agents in enumerate(per_proc)
    ]


def agents_with_role(layout: Sequence[ProcPlan], role: str) -> list[AgentPlan]:
    """Every agent of ``layout`` playing ``role``, process by process."""
    return [a for proc in layout for a in proc.agents if role in a.roles]


def parse_selection(text: str | None, known: Sequence[str], what: str) -> list[str]:
    """Names chosen by ``--scenarios``/``--systems``: ``all``, empty or a comma list.

    The result keeps the order of ``known`` (the report reads the same every run) and has no
    duplicates.

    Raises:
        ConfigError: a name that is not in ``known``, naming the ones that are.
    """
    if text is None or text.strip() in ("", "all"):
        return list(known)
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ConfigError(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(known)})")
    return [name for name in known if name in chosen]

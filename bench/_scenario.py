"""The scenario registry: adding a scenario is one decorated function.

```python
@scenario("crossnode", roles=("echo",), summary="request/reply through two nodes")
async def crossnode(ctx: ScenarioContext) -> None:
    await ctx.latency_case("crossnode/64B", ctx.profile.params(3000, 200),
                           ctx.client.request, pattern(64), check=lambda n: n == 64)
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench._harness import ScenarioContext
from bench._plan import ROLES
from fabric.errors import ConfigError

__all__ = ["Scenario", "ScenarioFn", "registry", "scenario"]

ScenarioFn = Callable[[ScenarioContext], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """A registered scenario: its name, the agent roles it needs and the function."""

    name: str
    summary: str
    roles: tuple[str, ...]
    fn: ScenarioFn
    cases: int
    """How many cases it records (for progress bars)."""


_REGISTRY: dict[str, Scenario] = {}


def scenario(
    name: str, *, roles: tuple[str, ...], summary: str, cases: int = 1
) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register ``fn`` as scenario ``name``; the run order is the registration order.

    Raises:
        ConfigError: the name is taken or a role is unknown.
    """

    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in _REGISTRY:
            raise ConfigError(f"scenario {name!r} registered twice")
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ConfigError(f"scenario {name!r} needs unknown roles {sorted(unknown)}")
        _REGISTRY[name] = Scenario(name, summary, roles, fn, cases)
        return fn

    return register


def registry() -> dict[str, Scenario]:
    """The scenarios registered so far, in registration order (``bench.scenarios.registered``
    is the one that has the built-in ones)."""
    return dict(_REGISTRY)

"""The swarm llm's token rule, loaded from the example (what the tests expect to see)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "examples" / "swarm" / "agents.py"
# Loaded under a name of its own: putting examples/swarm on sys.path would expose its generic
# module names (agents, run) to every other test.
_spec = importlib.util.spec_from_file_location("swarm_example_agents", _PATH)
assert _spec is not None and _spec.loader is not None
_agents = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_agents)


def expected_tokens(prompt: str) -> list[str]:
    return [w + " " for w in _agents.tokens_for(prompt)[1]]

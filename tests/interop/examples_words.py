"""The swarm llm's token rule, imported from the example (what the tests expect to see)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "swarm"))

from agents import tokens_for


def expected_tokens(prompt: str) -> list[str]:
    return [w + " " for w in tokens_for(prompt)[1]]

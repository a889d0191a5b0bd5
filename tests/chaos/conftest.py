"""Fixtures of the chaos scenarios: the mesh helpers of tests/mesh, reused; and the guard that
keeps the long runs (``soak`` marker) out of any run that did not ask for them."""

from __future__ import annotations

import pytest
from mesh.conftest import mesh_nodes

__all__ = ["mesh_nodes"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pyproject's addopts deselects them ("-m 'not soak'"), but any -m given on the command
    # line replaces that expression: "-m 'not faults'" must not start a 20-minute run.
    if "soak" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a long run: select it with -m soak")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)

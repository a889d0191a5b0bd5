"""Fixtures of the chaos scenarios: the mesh helpers of tests/mesh, reused."""

from __future__ import annotations

from mesh.conftest import mesh_nodes

__all__ = ["mesh_nodes"]

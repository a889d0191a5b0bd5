"""The bench: the fabric against HTTP REST, NATS and Zenoh (``fabric bench``).

``bench.cli.bench_command`` is the typer command; ``python -m bench`` runs it on its own.
Importing this package stays cheap (worker processes import it): the CLI loads on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bench_command"]


def __getattr__(name: str) -> Any:
    if name == "bench_command":
        from bench.cli import bench_command

        return bench_command
    raise AttributeError(f"module 'bench' has no attribute {name!r}")

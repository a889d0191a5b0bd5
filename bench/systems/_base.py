"""What a system under test provides: an environment, worker agents and a client.

A system is three pieces, all small:

- ``start_env``/``stop_env`` in the bench process: servers the system needs (nats-server, a
  fabric node) and what workers must know to reach them (a JSON-able dict);
- ``serve`` (or ``serve_blocking``) in each worker process: the agents of one
  :class:`~bench._plan.ProcPlan`, each playing its roles, announcing readiness once every
  agent can be reached;
- ``open_client`` in the bench process: a :class:`Client` the scenarios drive.

Optional systems name the modules and binaries they need; a missing one makes the system
*skipped* with its install hint, never failed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench._plan import ProcPlan

__all__ = ["Announce", "Client", "System", "WorkerInfo"]

#: What a worker tells the bench when it is ready (ports, names…), JSON-able.
WorkerInfo = dict[str, Any]
Announce = Callable[[WorkerInfo], None]


class Client:
    """The requester side of a system, driven by the scenarios.

    Methods are coroutines, or plain blocking functions when ``blocking`` is true (the harness
    then runs the whole measurement loop in one thread, which is how a blocking API is used at
    its best). A method a system cannot do raises ``NotImplementedError`` with the reason; the
    case is then reported "n/a".
    """

    blocking: ClassVar[bool] = False

    def request(self, payload: bytes) -> Any:
        """One request/reply with an echo agent; returns the reply's length."""
        raise NotImplementedError("no request/reply")

    def fanout(self, payload: bytes) -> Any:
        """One request to every fan-out child; returns how many replied."""
        raise NotImplementedError("no fan-out")

    def map(self, tasks: Sequence[bytes], concurrency: int) -> Any:
        """Every task to one map worker, at most ``concurrency`` in flight; results in order."""
        raise NotImplementedError("no map")

    def bigfan(self, payload: bytes) -> Any:
        """``payload`` to every big-payload agent; returns how many said ``ok:<len>``."""
        raise NotImplementedError("no big fan-out")

    def stream(self, chunks: int, size: int) -> Any:
        """One streamed reply of ``chunks`` chunks; returns the bytes received."""
        raise NotImplementedError("no streaming reply")

    def throughput(self, count: int, size: int, budget_s: float) -> Any:
        """Send up to ``count`` one-way messages within ``budget_s``.

        Returns ``(delivered, seconds)``: messages the sink counted and the time from the first
        send to the sink's confirmation.
        """
        raise NotImplementedError("no one-way messages")

    async def aclose(self) -> None:
        """Close connections (bounded)."""


class System:
    """A system under test; subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]
    label: ClassVar[str]
    hint: ClassVar[str] = ""
    #: Import names and executables the system needs.
    modules: ClassVar[tuple[str, ...]] = ()
    binaries: ClassVar[tuple[str, ...]] = ()
    #: Distributions whose versions the report records.
    packages: ClassVar[tuple[str, ...]] = ()
    #: A reference row (the memcpy limit), not a competitor: added whenever it applies.
    reference: ClassVar[bool] = False
    #: Workers use ``serve_blocking`` instead of ``serve``.
    blocking_worker: ClassVar[bool] = False
    #: Scenarios this system has nothing to say about (empty: all).
    only_scenarios: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    def skip_reason(self) -> str | None:
        """Why this system cannot run here (a missing module or binary), or None."""
        for module in self.modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"Python module {module!r} is not installed"
        for binary in self.binaries:
            if shutil.which(binary) is None:
                return f"executable {binary!r} is not on PATH"
        return None

    def versions(self) -> dict[str, str]:
        """Installed versions of :attr:`packages` (``"missing"`` when not installed)."""
        found: dict[str, str] = {}
        for dist in self.packages:
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                found[dist] = "missing"
        return found

    # --- bench process ------------------------------------------------------------------

    async def start_env(self, workdir: Path) -> dict[str, Any]:
        """Start what the system needs besides its agents; returns what workers need to know.

        Raises:
            Timeout, ConnectionLost: a server did not come up.
        """
        return {}

    async def stop_env(self) -> None:
        """Stop what :meth:`start_env` started (bounded, never raises)."""

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        """A client connected to the agents of ``layout`` and ready to measure.

        Raises:
            Timeout: the agents could not all be reached in time.
        """
        raise NotImplementedError

    # --- worker process -----------------------------------------------------------------

    async def serve(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: asyncio.Event
    ) -> None:
        """Run the agents of ``plan`` until ``stop`` is set; call ``announce`` once ready."""
        raise NotImplementedError

    def serve_blocking(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: threading.Event
    ) -> None:
        """Blocking twin of :meth:`serve`, for systems whose API is blocking."""
        raise NotImplementedError

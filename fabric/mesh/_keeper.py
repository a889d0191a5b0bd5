"""What ``fabric up`` does when one of its nodes exits. Pure: no processes, no clock.

Rules:

1. A node that exits while the mesh is up is reported (one line: its name and how it ended)
   and the other nodes keep running, whatever the exit was.
2. With restarts on (the default), it is started again after a delay that doubles with each
   restart in a row (0.5 s, 1 s, 2 s, ... up to 30 s), so a node that dies at once does not
   spin. A node that stayed up for ``stable`` seconds starts over from the first delay.
3. With restarts off, it stays down; ``fabric up`` keeps the others until Ctrl-C.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

__all__ = ["Keeper", "describe_exit"]


@dataclass(slots=True)
class _Record:
    restarts: int = 0
    delay: float = 0.0


class Keeper:
    """Restart decisions for the nodes of a local mesh."""

    def __init__(
        self, *, restart: bool = True, first: float = 0.5, cap: float = 30.0, stable: float = 60.0
    ) -> None:
        self.restart = restart
        self.first = first
        self.cap = cap
        self.stable = stable
        self._records: dict[str, _Record] = {}

    def exited(self, name: str, *, up_for: float) -> float | None:
        """``name`` exited after running ``up_for`` seconds: the delay before starting it
        again, or None when it stays down (rule 3)."""
        if not self.restart:
            return None
        record = self._records.setdefault(name, _Record())
        if up_for >= self.stable or record.delay == 0.0:
            record.delay = self.first
        else:
            record.delay = min(record.delay * 2, self.cap)
        record.restarts += 1
        return record.delay

    def restarts(self, name: str) -> int:
        """How many times ``name`` was restarted so far."""
        record = self._records.get(name)
        return 0 if record is None else record.restarts


def describe_exit(returncode: int) -> str:
    """``returncode`` of a child process in words: "killed by SIGKILL", "exit code 1"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"

"""The history a chaos scenario records, in the style of Jepsen's: every operation is an
``invoke`` followed by at most one completion, ``ok`` (it happened), ``fail`` (it did not: a
typed error said so) or ``info`` (unknown: it may or may not have happened). Deliveries seen by
a consumer are recorded as completed ``receive`` operations.

The recorder is what the test agents use (in the test process, or in an agent process that
writes JSON lines to a file the test reads back); ``checker.py`` judges what it recorded.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fabric.errors import FabricError

Kind = Literal["invoke", "ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history."""

    #: invoke, then one of ok / fail / info for the same ``id``.
    kind: Kind
    #: Which client did it (an agent's name).
    process: str
    #: publish, receive, request, write, read, send (a stream element), ...
    op: str
    #: The operation's id: every event of one operation shares it.
    id: str
    #: What was sent, received or returned (a message id, a version, ...).
    value: Any = None
    #: For fail / info: the error's type name; for fail it must be one of the fabric's typed
    #: errors (``typed`` True), anything else is an untyped failure.
    error: str | None = None
    typed: bool = False
    #: Monotonic seconds; orders events of one process.
    time: float = 0.0


class History:
    """Records events in memory, and optionally appends them to a JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self.events: list[Event] = []
        self._ids = itertools.count(1)
        self._file = path.open("a", buffering=1) if path is not None else None

    def _add(self, event: Event) -> Event:
        self.events.append(event)
        if self._file is not None:
            self._file.write(json.dumps(asdict(event)) + "\n")
        return event

    def invoke(self, process: str, op: str, value: Any = None) -> str:
        """Record the start of an operation; returns its id for the completion."""
        op_id = f"{process}:{next(self._ids)}"
        self._add(Event("invoke", process, op, op_id, value, time=time.monotonic()))
        return op_id

    def ok(self, process: str, op: str, op_id: str, value: Any = None) -> None:
        self._add(Event("ok", process, op, op_id, value, time=time.monotonic()))

    def fail(self, process: str, op: str, op_id: str, exc: BaseException) -> None:
        """A failure: typed if ``exc`` is one of the fabric's errors (checker: "typed error")."""
        typed = isinstance(exc, FabricError)
        self._add(
            Event(
                "fail", process, op, op_id, None, type(exc).__name__, typed, time.monotonic()
            )
        )

    def info(self, process: str, op: str, op_id: str, note: str) -> None:
        """The outcome is unknown (the node died with the write in flight, ...)."""
        self._add(Event("info", process, op, op_id, None, note, False, time.monotonic()))

    def received(self, process: str, op: str, value: Any) -> None:
        """A delivery seen by ``process``: an operation that is complete when it is seen."""
        op_id = f"{process}:{next(self._ids)}"
        self._add(Event("ok", process, op, op_id, value, time=time.monotonic()))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: Path) -> list[Event]:
    """Read back a JSON-lines history (an agent process's)."""
    return list(_parse(path.read_text().splitlines()))


def _parse(lines: Iterable[str]) -> Iterator[Event]:
    for line in lines:
        if line.strip():
            yield Event(**json.loads(line))

"""A pure checker of chaos histories (``history.py``), in the style of Jepsen's checkers: it
classifies every operation, then a guarantee names the classes that are violations.

Classes:

- requests: ``reply`` (the right answer), ``wrong_reply`` (someone else's answer),
  ``typed_error`` (a fabric error said it failed), ``untyped_error`` (anything else raised),
  ``indeterminate`` (info), ``hang`` (invoked, never completed);
- messages (publish -> receive, per subscriber): ``delivered_once``, ``duplicated``, ``lost``
  (acknowledged publish never seen), ``unpublished`` (a delivery nobody published);
- streams (ordered sends of one producer to one consumer): the same, plus ``reordered``;
- writes (acknowledged versions against the final read): ``durable``, ``lost``,
  ``indeterminate`` (the write in flight at a crash, found or not), ``phantom_write`` (a
  later version that no write made).

Guarantees (``GUARANTEES``) say which classes violate them; ``Report.violations`` lists them.
No I/O, no clock: everything comes from the events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import Event

#: Guarantee -> the classes that violate it.
GUARANTEES: dict[str, frozenset[str]] = {
    # pub/sub is at most once: loss under faults is allowed (and counted), a duplicate is not.
    "at_most_once": frozenset({"duplicated", "unpublished"}),
    # every request ends in its own reply or a typed error: never a hang, never a stranger's.
    "reply_or_typed_error": frozenset({"hang", "untyped_error", "wrong_reply"}),
    # an acknowledged write survives: the final read shows it (or a later version).
    "acknowledged_write_durable": frozenset({"lost_write", "phantom_write"}),
    # a migrating agent's stream: every element once, in order.
    "exactly_once_in_order": frozenset(
        {"duplicated", "lost", "reordered", "unpublished"}
    ),
}


@dataclass
class Report:
    """Counts per class, and the operations behind each anomaly."""

    counts: Counter[str] = field(default_factory=Counter)
    anomalies: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    def add(self, cls: str, what: Any = None) -> None:
        self.counts[cls] += 1
        if what is not None and len(self.anomalies[cls]) < 20:
            self.anomalies[cls].append(what)

    def violations(self, guarantee: str) -> dict[str, int]:
        """The classes seen that ``guarantee`` forbids, with their counts."""
        bad = GUARANTEES[guarantee]
        return {cls: n for cls, n in self.counts.items() if cls in bad and n}

    def explain(self, guarantee: str) -> str:
        bad = self.violations(guarantee)
        examples = {cls: self.anomalies.get(cls, [])[:5] for cls in bad}
        return f"{guarantee} violated: {bad}; examples {examples}; all counts {dict(self.counts)}"


def _operations(events: Iterable[Event], op: str) -> dict[str, tuple[Event, Event | None]]:
    """op id -> (invoke, completion or None), for operations named ``op``."""
    invokes: dict[str, Event] = {}
    done: dict[str, Event] = {}
    for e in events:
        if e.op != op:
            continue
        if e.kind == "invoke":
            invokes[e.id] = e
        elif e.id not in done:
            done[e.id] = e
    return {i: (inv, done.get(i)) for i, inv in invokes.items()}


def check_requests(events: Sequence[Event], report: Report | None = None) -> Report:
    """Each ``request`` op: invoke value = what was asked, ok value = what came back (the
    right reply echoes the ask)."""
    report = report or Report()
    for op_id, (inv, end) in _operations(events, "request").items():
        if end is None:
            report.add("hang", op_id)
        elif end.kind == "ok":
            if end.value == inv.value:
                report.add("reply")
            else:
                report.add("wrong_reply", (op_id, inv.value, end.value))
        elif end.kind == "fail":
            report.add("typed_error" if end.typed else "untyped_error", (op_id, end.error))
        else:
            report.add("indeterminate", (op_id, end.error))
    return report


def check_messages(
    events: Sequence[Event], subscribers: Iterable[str], report: Report | None = None
) -> Report:
    """``publish`` ops (value = message id) against ``receive`` ops (value = message id) of
    each subscriber. A publish that failed was not sent (a delivery of it is "unpublished");
    one whose outcome is unknown may be delivered once or not at all."""
    report = report or Report()
    sent: dict[Any, bool] = {}  # message id -> acknowledged
    for _, (inv, end) in _operations(events, "publish").items():
        if end is None or end.kind == "info":
            sent.setdefault(inv.value, False)
        elif end.kind == "ok":
            sent[inv.value] = True
    for sub in subscribers:
        seen = Counter(e.value for e in events if e.op == "receive" and e.process == sub)
        for msg, n in seen.items():
            if msg not in sent:
                report.add("unpublished", (sub, msg))
            elif n > 1:
                report.add("duplicated", (sub, msg, n))
            else:
                report.add("delivered_once")
        for msg, acked in sent.items():
            if msg not in seen:
                report.add("lost" if acked else "not_sent", (sub, msg) if acked else None)
    return report


def check_stream(
    events: Sequence[Event], producer: str, consumer: str, report: Report | None = None
) -> Report:
    """``send`` ops of ``producer`` (value = sequence number, acknowledged in order) against
    ``receive`` ops of ``consumer``: exactly once, in the order sent."""
    report = report or Report()
    acked = [
        inv.value
        for _, (inv, end) in _operations(events, "send").items()
        if inv.process == producer and end is not None and end.kind == "ok"
    ]
    order = {v: i for i, v in enumerate(acked)}
    got = [e.value for e in events if e.op == "receive" and e.process == consumer]
    counts = Counter(got)
    last = -1
    seen: set[Any] = set()
    for value in got:
        if value not in order:
            report.add("unpublished", value)
            continue
        if value in seen:
            continue  # a duplicate: counted once below
        seen.add(value)
        if order[value] < last:
            report.add("reordered", value)
        else:
            report.add("delivered_once")
        last = max(last, order[value])
    for value, n in counts.items():
        if n > 1:
            report.add("duplicated", (value, n))
    for value in acked:
        if value not in counts:
            report.add("lost", value)
    return report


def check_writes(
    events: Sequence[Event], final: dict[str, tuple[int, Any]], report: Report | None = None
) -> Report:
    """``write`` ops (invoke value = (key, value), ok value = version) against ``final``, the
    (version, value) of each key read after the faults. An acknowledged write is durable when
    the key is at its version with its value, or at a later version; a write in flight at
    the crash (info, or no completion) may be found or not."""
    report = report or Report()
    latest: dict[str, tuple[int, Any]] = {}
    unknown: dict[str, list[Any]] = defaultdict(list)
    for inv, end in _operations(events, "write").values():
        key, value = inv.value
        if end is not None and end.kind == "ok":
            if key not in latest or end.value > latest[key][0]:
                latest[key] = (end.value, value)
        elif end is None or end.kind == "info":
            unknown[key].append(value)
            report.add("indeterminate")
        else:
            report.add("failed_write")
    for key, (version, value) in latest.items():
        got = final.get(key)
        if got is None or got[0] < version:
            report.add("lost_write", (key, version, got))
        elif got[0] == version and got[1] != value:
            report.add("lost_write", (key, version, "other value at that version"))
        elif got[0] > version and got[1] not in unknown[key]:
            # Only a write in flight at the crash can have made a later version.
            report.add("phantom_write", (key, version, got))
        else:
            report.add("durable")
    return report

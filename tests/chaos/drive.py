"""Clients that drive a chaos scenario and record what happened into a ``History``.

Every loop is bounded in count and in time; every operation is awaited under an outer bound
well past its own timeout, so a hang is recorded as a missing completion (the checker's
"hang"), never as a stuck test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fabric.errors import ConnectionLost, FabricError
from sdk import Agent, Msg

from .history import History

#: An operation not completed this long after its own timeout is a hang.
HANG_MARGIN = 10.0
#: Errors after which a write may or may not have happened (the checker's "info").
UNKNOWN_OUTCOME = (ConnectionLost, TimeoutError)


async def requests(
    agent: Agent,
    history: History,
    subject: str,
    *,
    until: asyncio.Event,
    timeout: float = 2.0,
    max_ops: int = 5_000,
    pause: float = 0.0,
) -> None:
    """Sequential requests on ``subject`` (payload = a unique id) until ``until`` is set."""
    for i in range(max_ops):
        if until.is_set():
            return
        ask = f"{agent.name}-{i}"
        op = history.invoke(agent.name, "request", ask)
        try:
            reply = await asyncio.wait_for(
                agent.request(subject, ask, timeout=timeout), timeout + HANG_MARGIN
            )
        except FabricError as exc:  # before TimeoutError: the fabric's Timeout is one
            history.fail(agent.name, "request", op, exc)
            if isinstance(exc, ConnectionLost):
                await asyncio.sleep(0.05)  # the link is down: do not spin
        except TimeoutError:
            continue  # our outer bound: no completion recorded, the checker calls it a hang
        except Exception as exc:
            history.fail(agent.name, "request", op, exc)  # untyped: a violation
        else:
            history.ok(agent.name, "request", op, reply.text())
        if pause:
            await asyncio.sleep(pause)


async def publishes(
    agent: Agent,
    history: History,
    subject: str,
    *,
    count: int,
    interval: float,
    op: str = "publish",
) -> None:
    """``count`` publishes of ids 0..count-1, ``interval`` s apart (acknowledged = returned)."""
    for i in range(count):
        op_id = history.invoke(agent.name, op, i)
        try:
            await asyncio.wait_for(agent.publish(subject, str(i)), HANG_MARGIN)
        except FabricError as exc:
            history.fail(agent.name, op, op_id, exc)
        except TimeoutError:
            continue
        else:
            history.ok(agent.name, op, op_id, i)
        await asyncio.sleep(interval)


def recorder(history: History, process: str) -> Any:
    """A subscription callback recording each delivery's id as a ``receive``."""

    def record(msg: Msg) -> None:
        history.received(process, "receive", int(msg.text()))

    return record


async def writes(
    agent: Agent, history: History, *, keys: int, until: asyncio.Event, max_ops: int = 20_000
) -> None:
    """State puts round-robin over ``keys`` keys until ``until``; a put cut off by a crash is
    recorded as info (it may have landed)."""
    for i in range(max_ops):
        if until.is_set():
            return
        key, value = f"k{i % keys}", f"value {i}"
        op = history.invoke(agent.name, "write", (key, value))
        try:
            version = await asyncio.wait_for(agent.state.put(key, value), 5 + HANG_MARGIN)
        except UNKNOWN_OUTCOME as exc:
            history.info(agent.name, "write", op, type(exc).__name__)
            await asyncio.sleep(0.05)
        except FabricError as exc:
            # BackendUnavailable with the write sent: also unknown (see StateBackend).
            history.info(agent.name, "write", op, type(exc).__name__)
            await asyncio.sleep(0.05)
        else:
            history.ok(agent.name, "write", op, version)


async def read_back(agent: Agent, keys: int) -> dict[str, tuple[int, Any]]:
    """The final (version, value) of every key (version 0 when it holds nothing)."""
    final: dict[str, tuple[int, Any]] = {}
    for i in range(keys):
        try:
            value, version = await agent.state.get(f"k{i}")
        except FabricError:
            final[f"k{i}"] = (0, None)
        else:
            final[f"k{i}"] = (version, bytes(value).decode())
    return final


async def after(delay: float, event: asyncio.Event) -> None:
    await asyncio.sleep(delay)
    event.set()


@contextlib.asynccontextmanager
async def timed(label: str) -> Any:
    start = time.monotonic()
    yield
    print(f"{label}: {time.monotonic() - start:.1f} s")

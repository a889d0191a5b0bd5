"""Refusals raise (issue 15, finding 7): a subscription the permissions refuse raises
``NotAuthorized`` in the agent, and an agent's own control subject is never refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from procs import start_node

from fabric.private import control_subject
from sdk import Msg, NotAuthorized, connect

pytestmark = [pytest.mark.timeout(90)]

AUTH = """
[agents.worker]
credential = "w"
publish = { allow = ["tasks.>"] }
subscribe = { allow = ["tasks.>"] }

[agents.operator]
credential = "o"
publish = { allow = ["_FABRIC.agent.>"] }
subscribe = { allow = [] }
"""


async def test_a_refused_subscription_raises(tmp_path: Path, fabric_env: dict[str, str]) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH)
    node = await start_node(tmp_path / "n.sock", dict(fabric_env, FABRIC_AUTH_FILE=str(auth)))
    try:
        async with connect("worker", node.url, credential="w") as worker:
            with pytest.raises(NotAuthorized) as refused:
                await worker.subscribe("secrets.>")
            assert refused.value.subject == "secrets.>"
            with pytest.raises(NotAuthorized):
                await worker.serve("secrets.answer", lambda m: b"")

            @worker.handler("secrets.handled")
            async def handled(msg: Msg) -> bytes:
                return b""

            # A decorator cannot raise later: the next flush() does.
            with pytest.raises(NotAuthorized):
                await worker.flush()
            await worker.flush()  # reported once
            ok = await worker.subscribe("tasks.run")
            assert ok.refusal is None
            # The refused ones left nothing behind at the node; the allowed one is there.
            status = await worker.node_status()
            [mine] = [s for s in status["sessions"] if s["name"] == "worker"]
            subjects = {s["subject"] for s in mine["subscriptions"]}
            assert "tasks.run" in subjects and control_subject("worker") in subjects
            assert not [s for s in subjects if s.startswith("secrets.")]
    finally:
        await node.stop()


async def test_an_agents_own_control_subject_is_never_refused(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    """With an auth file that allows the worker only ``tasks.>``, an operator can still ask it
    to migrate (``fabric agent migrate``) and it moves."""
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH)
    env = dict(fabric_env, FABRIC_AUTH_FILE=str(auth))
    n1 = await start_node(tmp_path / "n1.sock", env, name="n1")
    n2 = await start_node(tmp_path / "n2.sock", env, name="n2")
    try:
        async with (
            connect("worker", n1.url, credential="w") as worker,
            connect("operator", n1.url, credential="o", direct=False) as operator,
        ):
            reply = await operator.request(control_subject("worker"), n2.url, timeout=30)
            report = json.loads(reply.text())
            assert report["node"] == "n2"
            assert worker.node == "n2"
            assert reply.sender is not None and reply.sender.agent == "worker"
    finally:
        await n1.stop()
        await n2.stop()

"""CurveZMQ between nodes (unknown keys refused, no plaintext fallback) and agent
credentials and permissions (NotAuthorized)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from fabric.auth import generate_keypair, load_keypair
from sdk import NotAuthorized, connect

from .conftest import MeshNodes, eventually, free_port, node_status

pytestmark = pytest.mark.timeout(120)


async def test_curve_mesh_refuses_unknown_keys_and_plaintext(
    mesh_nodes: MeshNodes, tmp_path: Path
) -> None:
    m = mesh_nodes
    keys = {}
    for name in ("c1", "c2", "intruder"):
        _, secret = generate_keypair(tmp_path / "keys", name)
        keys[name] = (load_keypair(secret)[0].decode(), secret)
    cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}

    def conf(name: str, seeds: list[str], allowed: list[str], extra: str = "") -> str:
        seed_list = ", ".join(f'"{s}"' for s in seeds)
        allow = ", ".join(f'"{k}"' for k in allowed)
        return (
            f'site = "cloud"\nseeds = [{seed_list}]\ncurve_key = "{keys[name][1]}"\n'
            f"curve_allowed = [{allow}]\nmesh_heartbeat = 0.25\n{extra}"
        )

    with_key = {n: f"{u}?key={keys[n][0]}" for n, u in cluster.items()}
    await asyncio.gather(
        m.start(
            "c1", conf("c1", [with_key["c2"]], [keys["c2"][0]], f'cluster = "{cluster["c1"]}"\n')
        ),
        m.start(
            "c2", conf("c2", [with_key["c1"]], [keys["c1"][0]], f'cluster = "{cluster["c2"]}"\n')
        ),
    )
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
    # messages cross the encrypted link
    async with connect("r", m.url("c2")) as r, connect("q", m.url("c1")) as q:

        async def echo(msg):  # type: ignore[no-untyped-def]
            return bytes(msg.data)

        await r.serve("svc.echo", echo)
        await r.flush()
        await m.wait_interest("c1", "svc.echo")
        assert bytes((await q.request("svc.echo", b"secret", timeout=5)).data) == b"secret"

    # a node whose key c1 does not know: right server key, wrong client key
    await m.start(
        "intruder",
        f'site = "cloud"\nseeds = ["{with_key["c1"]}"]\ncurve_key = "{keys["intruder"][1]}"\n'
        f'curve_allowed = ["{keys["c1"][0]}"]\n',
    )
    # a node with no keys at all (plaintext) dialling the curve listener
    await m.start("plain", f'site = "cloud"\nseeds = ["{cluster["c1"]}"]\n')

    async def tried_twice() -> bool:
        def tries(stats: dict[str, int]) -> int:
            # Failed dials in the node's first seconds count as retries (peers starting).
            return stats["dial_failures"] + stats["dial_retries"]

        a = tries((await node_status(m.url("intruder")))["mesh"]["stats"])
        b = tries((await node_status(m.url("plain")))["mesh"]["stats"])
        return a >= 2 and b >= 2

    await eventually(tried_twice, 40, "both refused nodes retried")
    assert set(await m.peers_of("c1")) == {"c2"}
    assert set(await m.peers_of("intruder")) == set()
    assert set(await m.peers_of("plain")) == set()


async def test_seed_without_server_key_fails_closed(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    """With keys configured, a peer whose server key is unknown is a configuration error: the
    node refuses to start rather than dial in plaintext."""
    _, secret = generate_keypair(tmp_path / "keys", "solo")
    config = tmp_path / "solo.toml"
    config.write_text(f'seeds = ["tcp://127.0.0.1:{free_port()}"]\ncurve_key = "{secret}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabric",
        "node",
        "--name",
        "solo",
        "--socket",
        str(tmp_path / "solo.sock"),
        "--config",
        str(config),
        env=fabric_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"ready" not in out
    assert b"has no ?key=" in err


AUTH = """
[agents.planner]
credential = "planner-secret"
publish = { allow = ["tasks.>", "events.*"], deny = ["tasks.admin.>"] }
subscribe = { allow = ["events.>"] }

[agents.worker]
credential_sha256 = "{worker_digest}"
publish = { allow = [] }
subscribe = { allow = ["tasks.run workers", "tasks.admin.*"], deny = ["tasks.admin.secret"] }
"""


async def test_agent_credentials_and_permissions(mesh_nodes: MeshNodes, tmp_path: Path) -> None:
    import hashlib

    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH.replace("{worker_digest}", hashlib.sha256(b"worker-secret").hexdigest()))
    node = await mesh_nodes.start("secure", f'auth_file = "{auth}"\n')
    url = node.url
    with pytest.raises(NotAuthorized):
        async with connect("planner", url, credential="wrong", reconnect=False):
            pass
    with pytest.raises(NotAuthorized):
        async with connect("stranger", url, credential="x", reconnect=False):
            pass
    async with (
        connect("planner", url, credential="planner-secret") as planner,
        connect("worker", url, credential="worker-secret") as worker,
    ):
        # allowed: a queue subscription to the group the worker may join
        jobs = await worker.subscribe("tasks.run", queue="workers")
        # refused: the same subject outside that group, and an overlap with a deny; the
        # refusal raises in the agent (issue 15, finding 7)
        with pytest.raises(NotAuthorized):
            await worker.subscribe("tasks.run")
        with pytest.raises(NotAuthorized):
            await worker.subscribe("tasks.admin.*")
        await worker.flush()
        await planner.publish("tasks.run", b"job-1")
        assert bytes((await jobs.next(timeout=5)).data) == b"job-1"
        await planner.flush()
        status = await planner.node_status()
        subs = {
            (s["subject"], s["queue"])
            for sess in status["sessions"]
            if sess["name"] == "worker"
            for s in sess["subscriptions"]
        }
        assert ("tasks.run", "workers") in subs
        assert ("tasks.run", "") not in subs and ("tasks.admin.*", "") not in subs
        # publishing outside its permissions: NotAuthorized, and nothing is delivered
        with pytest.raises(NotAuthorized):
            await planner.request("tasks.admin.reset", b"", timeout=5)
        with pytest.raises(NotAuthorized):
            await worker.request("tasks.run", b"", timeout=5)

        # replies are always allowed: the worker (no publish rights) can still answer
        async def answer(msg):  # type: ignore[no-untyped-def]
            return b"done"

        await worker.serve("tasks.run", answer, queue="workers")
        await worker.flush()
        await jobs.aclose()
        await worker.flush()
        assert bytes((await planner.request("tasks.run", b"", timeout=5)).data) == b"done"

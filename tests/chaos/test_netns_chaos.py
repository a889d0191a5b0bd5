"""Chaos between sites in network namespaces (deploy/netns/mesh.sh with tc netem): delay with
jitter, loss and reordering on the edge's link, then a partition (100% loss), then healed.

Guarantees: every request ends in its reply or a typed error; pub/sub is at most once.
Marker ``netns``; skips, with the reason, without root, iproute2 or a kernel with sch_netem
(this CI machine's kernel has none: the delay-only cases run through a TCP relay in
tests/chaos/test_scenarios.py instead).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from mesh.test_netns import SCRIPT, _skip_reason
from procs import until

from sdk import connect

from . import drive
from .checker import check_messages, check_requests
from .history import History

pytestmark = [pytest.mark.netns, pytest.mark.faults, pytest.mark.timeout(180)]


def _netem_missing() -> str | None:
    subprocess.run(["ip", "netns", "add", "af-netem-probe"], capture_output=True)
    try:
        probe = subprocess.run(
            ["ip", "netns", "exec", "af-netem-probe", "tc", "qdisc", "add", "dev", "lo",
             "root", "netem", "delay", "1ms"],
            capture_output=True, text=True,
        )  # fmt: skip
        if probe.returncode != 0:
            return f"tc netem unavailable (sch_netem): {probe.stderr.strip()}"
        return None
    finally:
        subprocess.run(["ip", "netns", "del", "af-netem-probe"], capture_output=True)


def _netem(rule: str) -> None:
    """Set the edge link's netem rule on both its ends."""
    for ns, dev in (("af-edge1", "v-edge1"), ("af-sw", "p-edge1")):
        subprocess.run(
            ["ip", "netns", "exec", ns, "tc", "qdisc", "change", "dev", dev, "root", "netem",
             *rule.split()],
            check=True,
        )  # fmt: skip


async def test_loss_reordering_and_partition_between_sites(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    reason = _skip_reason() or _netem_missing()
    if reason:
        pytest.skip(reason)
    env = dict(
        fabric_env, AF_DIR=str(tmp_path / "netns"), AF_DELAY="20ms", AF_DELAY_MODE="netem",
        PYTHON=sys.executable,
    )  # fmt: skip
    history = History()
    try:
        up = await asyncio.create_subprocess_exec(
            str(SCRIPT), "up", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(up.communicate(), 90)
        assert up.returncode == 0, out.decode()
        base = tmp_path / "netns"
        edge, cloud = f"unix://{base}/edge1.sock", f"unix://{base}/cloud1.sock"
        async with (
            connect("echo", cloud) as echo,
            connect("sub", edge) as sub,
            connect("client", edge, direct=False) as client,
            connect("pub", cloud) as pub,
        ):

            async def answer(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await echo.serve("svc.echo", answer)
            await sub.subscribe("chaos.events", callback=drive.recorder(history, "sub"))
            await echo.flush()
            await sub.flush()
            stop = asyncio.Event()
            asker = asyncio.ensure_future(
                drive.requests(client, history, "svc.echo", until=stop, timeout=1.0)
            )
            sender = asyncio.ensure_future(
                drive.publishes(pub, history, "chaos.events", count=1500, interval=0.004)
            )
            _netem("delay 20ms 10ms distribution normal loss 3% reorder 25% 50%")
            await asyncio.sleep(3)
            _netem("loss 100%")  # a partition: nothing crosses
            await asyncio.sleep(2)
            _netem("delay 20ms")  # healed
            await until(_answers(client), timeout=30, what="answers after the partition")
            await asyncio.wait_for(sender, 60)
            stop.set()
            await asker
            await pub.flush()
            await sub.flush()
    finally:
        down = await asyncio.create_subprocess_exec(str(SCRIPT), "down", env=env)
        await asyncio.wait_for(down.wait(), 60)
    requests = check_requests(history.events)
    assert not requests.violations("reply_or_typed_error"), requests.explain(
        "reply_or_typed_error"
    )
    messages = check_messages(history.events, ["sub"])
    assert not messages.violations("at_most_once"), messages.explain("at_most_once")
    print(f"netns chaos: requests {dict(requests.counts)}, messages {dict(messages.counts)}")


def _answers(agent):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        try:
            return (await agent.request("svc.echo", "ping", timeout=1)).text() == "ping"
        except Exception:
            return False

    return check

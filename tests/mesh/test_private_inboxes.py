"""Private inboxes across two cluster nodes (issue 15, finding 1): the requester on c1, the
responder on c2, an attacker on each node; with and without a permissions file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sdk import Msg, NotAuthorized, Sender, connect

from .conftest import MeshNodes, cloud_toml, free_port

pytestmark = [pytest.mark.timeout(120)]

AUTH = """
[agents.alice]
credential = "a"
publish = { allow = ["svc.>", "review.>"] }
subscribe = { allow = ["events.>"] }

[agents.svc]
credential = "s"
subscribe = { allow = ["svc.>", "review.>"] }

[agents.mute]
credential = "u"
subscribe = { allow = ["review.>"] }

[agents.mallory]
credential = "m"
publish = { allow = ["mallory.>"] }
subscribe = { allow = ["mallory.>"] }

[agents.probe]
credential = "p"
"""

CREDS = {"alice": "a", "svc": "s", "mute": "u", "mallory": "m", "probe": "p"}


@pytest.fixture(params=["open", "auth"])
async def pair(request, mesh_nodes: MeshNodes, tmp_path: Path):  # type: ignore[no-untyped-def]
    extra = ""
    creds: dict[str, str] | None = None
    if request.param == "auth":
        path = tmp_path / "auth.toml"
        path.write_text(AUTH)
        extra = f'auth_file = "{path}"\n'
        creds = CREDS
    m = mesh_nodes
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster, extra)) for n in ("c1", "c2")))
    if creds is None:
        await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
    return m, creds


def cred(creds: dict[str, str] | None, name: str) -> str | None:
    return None if creds is None else creds[name]


async def test_across_two_nodes_inboxes_cannot_be_read_or_forged(pair) -> None:  # type: ignore[no-untyped-def]
    m, creds = pair
    release = asyncio.Event()
    started = asyncio.Event()
    async with (
        connect("svc", m.url("c2"), credential=cred(creds, "svc")) as svc,
        connect("alice", m.url("c1"), credential=cred(creds, "alice")) as alice,
        connect("mallory", m.url("c2"), credential=cred(creds, "mallory")) as near,
        connect("mallory", m.url("c1"), credential=cred(creds, "mallory")) as far,
    ):

        async def slow(msg: Msg) -> str:
            started.set()
            await release.wait()
            return "genuine"

        await svc.serve("svc.slow", slow)
        await svc.serve("svc.echo", lambda msg: bytes(msg.data))
        for spy in (near, far):
            with pytest.raises(NotAuthorized):
                await spy.subscribe("_INBOX.>")
            with pytest.raises(NotAuthorized):
                await spy.subscribe(alice._core.inbox.subject.rsplit(".", 1)[0] + ".>")
        watchers = []
        if creds is None:
            watchers = [await spy.subscribe(">") for spy in (near, far)]
        await _until_routed(alice, "svc.echo")
        for i in range(50):
            assert (await alice.request("svc.echo", f"s{i}", timeout=5)).text() == f"s{i}"
        for spy in (near, far):
            await spy.flush()  # whatever their nodes sent them before is in by now
        # Everything the spies' ">" saw: requests (they subscribed to them), never a reply.
        for watcher in watchers:
            leaked = [msg.subject for msg in watcher._pending if msg.subject.startswith("_INBOX.")]
            assert leaked == []
            await watcher.aclose()  # a subscriber a request reaches may answer it: not a forger
        for spy in (near, far):
            await spy.flush()
        # Forge from the responder's node and from the requester's node.
        pending = asyncio.ensure_future(alice.request("svc.slow", b"", timeout=20))
        await started.wait()
        reply_to = f"{alice._core.inbox.subject}.{max(alice._core.inbox.waiters)}"
        for spy in (near, far):
            for i in range(10):
                await spy.publish(reply_to, f"forged-{i}")
            await spy.flush()
        for node in ("c1", "c2"):
            async with connect("probe", m.url(node), credential=cred(creds, "probe")) as probe:
                st = (await probe.node_status())["stats"]
                assert st["forged_replies"] == 10, (node, st)
        assert not pending.done()
        release.set()
        reply = await pending
        assert reply.text() == "genuine"
        assert reply.sender == Sender("svc", "c2")


async def test_gather_across_nodes_names_the_silent_responder(pair) -> None:  # type: ignore[no-untyped-def]
    m, creds = pair
    never = asyncio.Event()
    async with (
        connect("svc", m.url("c1"), credential=cred(creds, "svc")) as near,
        connect("svc", m.url("c2"), credential=cred(creds, "svc")) as far,
        connect("mute", m.url("c2"), credential=cred(creds, "mute")) as mute,
        connect("alice", m.url("c1"), credential=cred(creds, "alice")) as alice,
    ):

        async def silent(msg: Msg) -> str:
            await never.wait()
            return ""

        await near.serve("review.x", lambda msg: "near")
        await far.serve("review.x", lambda msg: "far")
        await mute.serve("review.x", silent)

        async def everyone() -> bool:
            result = await alice.gather("review.x", b"", deadline=1.0)
            return result.reached == 3

        deadline = asyncio.get_running_loop().time() + 20
        while not await everyone():
            assert asyncio.get_running_loop().time() < deadline, "interest never reached c1"
        result = await alice.gather("review.x", b"", deadline=1.5)
        assert result.reached == 3 and result.missing == 1
        assert sorted(result.responders) == [Sender("svc", "c1"), Sender("svc", "c2")]
        assert result.missing_names == [Sender("mute", "c2")]


async def _until_routed(agent, subject: str) -> None:  # type: ignore[no-untyped-def]
    """Until a request on ``subject`` finds its responder (interest crossed the mesh)."""
    from sdk import NoResponders

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            await agent.request(subject, b"ping", timeout=5)
            return
        except NoResponders:
            assert loop.time() < deadline, f"{subject} never routed"
            await asyncio.sleep(0.05)

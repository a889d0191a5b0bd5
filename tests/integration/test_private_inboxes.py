"""Replies are private (issue 15, finding 1): only the requester reads its inbox, only a
responder the request was routed to answers into it, and the fabric says who answered.

Each attack runs with and without a permissions file, against a real node process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest
from procs import start_node, until

from fabric.transports import open_unix_link
from fabric.wire import Header, Kind, encode_header
from sdk import Agent, Msg, NotAuthorized, Sender, connect

pytestmark = [pytest.mark.timeout(90)]

AUTH = """
[agents.alice]
credential = "a"
publish = { allow = ["svc.>", "events.>"] }
subscribe = { allow = ["events.>"] }

[agents.svc]
credential = "s"
publish = { allow = ["events.>"] }
subscribe = { allow = ["svc.>"] }

[agents.mallory]
credential = "m"
publish = { allow = ["mallory.>", "svc.echo"] }
subscribe = { allow = ["mallory.>"] }
"""

CREDENTIALS = {"alice": "a", "svc": "s", "mallory": "m"}


class _Sink:
    """LinkHandler that ignores everything (a hostile raw client)."""

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        pass

    def link_lost(self, exc: BaseException | None) -> None:
        pass


@pytest.fixture(params=["open", "auth"])
async def secured(request, tmp_path: Path, fabric_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """A node without, then with, a permissions file; yields (url, credentials or None)."""
    env = dict(fabric_env)
    creds = None
    if request.param == "auth":
        path = tmp_path / "auth.toml"
        path.write_text(AUTH)
        env["FABRIC_AUTH_FILE"] = str(path)
        creds = CREDENTIALS
    node = await start_node(tmp_path / "n.sock", env, name="n1")
    try:
        yield node.url, creds
    finally:
        await node.stop()


def _cred(creds: dict[str, str] | None, name: str) -> str | None:
    return None if creds is None else creds[name]


def _pending_reply(alice: Agent) -> str:
    """The reply subject of alice's request in flight, as an attacker who learnt it would."""
    return f"{alice._core.inbox.subject}.{max(alice._core.inbox.waiters)}"


async def test_nobody_else_can_subscribe_to_an_inbox(secured) -> None:  # type: ignore[no-untyped-def]
    url, creds = secured
    async with (
        connect("svc", url, credential=_cred(creds, "svc")) as svc,
        connect("alice", url, credential=_cred(creds, "alice"), direct=False) as alice,
        connect("mallory", url, credential=_cred(creds, "mallory")) as mallory,
    ):
        await svc.serve("svc.echo", lambda m: bytes(m.data))
        inbox = alice._core.inbox.subject
        root = inbox.rsplit(".", 1)[0]
        for pattern in ("_INBOX.>", "_INBOX.*.>", f"{inbox}.>", f"{root}.>", root):
            with pytest.raises(NotAuthorized):
                await mallory.subscribe(pattern)
        # Wildcards that are not inbox patterns are not refused (without a permissions file)
        # but never match a reply.
        watchers = []
        if creds is None:
            watchers = [await mallory.subscribe(p) for p in (">", "*.>", "*.*.*", "*.*.*.*")]
        canary = "mallory.canary" if creds else "events.canary"
        canary_sub = await mallory.subscribe(canary)
        for i in range(50):
            reply = await alice.request("svc.echo", f"secret-{i}", timeout=5)
            assert reply.text() == f"secret-{i}"
        # The node routes in order: once the canary arrived, any leaked reply would have too.
        await (alice if creds is None else mallory).publish(canary, b"end")
        assert (await canary_sub.next(timeout=5)).text() == "end"
        for sub in watchers:
            seen = []
            while sub._pending:
                seen.append(sub._pending.popleft().subject)
            assert not [s for s in seen if s.startswith("_INBOX.")], seen


async def test_forged_replies_are_refused_and_the_real_one_wins(secured) -> None:  # type: ignore[no-untyped-def]
    url, creds = secured
    release = asyncio.Event()
    started = asyncio.Event()
    async with (
        connect("svc", url, credential=_cred(creds, "svc")) as svc,
        connect("alice", url, credential=_cred(creds, "alice"), direct=False) as alice,
        connect("mallory", url, credential=_cred(creds, "mallory")) as mallory,
    ):

        async def slow(msg: Msg) -> str:
            started.set()
            await release.wait()
            return "genuine"

        await svc.serve("svc.slow", slow)
        pending = asyncio.ensure_future(alice.request("svc.slow", b"", timeout=10))
        await started.wait()
        reply_to = _pending_reply(alice)
        for i in range(10):
            await mallory.publish(reply_to, f"forged-{i}")
        await mallory.flush()
        # The node refused all ten: nothing reached alice yet.
        assert not pending.done()
        stats = (await mallory.node_status())["stats"]
        assert stats["forged_replies"] == 10
        release.set()
        reply = await pending
        assert reply.text() == "genuine"
        assert reply.sender == Sender("svc", "n1")
        assert "fabric-sender" not in reply.headers


async def test_a_responder_cannot_claim_to_be_someone_else(secured) -> None:  # type: ignore[no-untyped-def]
    url, creds = secured
    async with (
        connect("svc", url, credential=_cred(creds, "svc")) as svc,
        connect("alice", url, credential=_cred(creds, "alice"), direct=False) as alice,
    ):

        async def liar(msg: Msg) -> None:
            await msg.respond(b"hi", headers={"fabric-sender": "bank@n1"})

        await svc.serve("svc.liar", liar)
        reply = await alice.request("svc.liar", b"", timeout=5)
        assert reply.sender == Sender("svc", "n1")


async def test_forged_replies_on_the_direct_path_are_dropped(secured) -> None:  # type: ignore[no-untyped-def]
    url, creds = secured
    release = asyncio.Event()
    started = asyncio.Event()
    async with (
        connect("svc", url, credential=_cred(creds, "svc")) as svc,
        connect("alice", url, credential=_cred(creds, "alice")) as alice,
    ):

        async def slow(msg: Msg) -> str:
            started.set()
            await release.wait()
            return "genuine"

        await svc.serve("svc.slow", slow)
        assert alice._core.direct is not None
        pending = asyncio.ensure_future(alice.request("svc.slow", b"", timeout=10))
        await started.wait()
        reply_to = _pending_reply(alice)
        # Mallory (same user, so the socket lets it in) writes a reply to alice's direct socket.
        link = await open_unix_link(alice._core.direct.address, 1 << 20, _Sink())
        try:
            for i in range(10):
                forged = Header(Kind.MSG, subject=reply_to, sid=0, msg_id=i + 1)
                link.send(encode_header(forged), f"forged-{i}".encode())
            # And a "no responders" to make the request fail.
            link.send(encode_header(Header(Kind.STATUS, subject=reply_to, status=503)))

            async def counted() -> bool:
                return alice.stats.forged_replies >= 11

            await until(counted, 10, "alice to drop the forged frames")
        finally:
            link.close()
        assert not pending.done()
        release.set()
        reply = await pending
        assert reply.text() == "genuine"
        assert reply.sender == Sender("svc", "n1")


@pytest.mark.parametrize("direct", [False, True], ids=["via-node", "direct"])
async def test_gather_names_who_answered_and_who_did_not(secured, direct: bool) -> None:  # type: ignore[no-untyped-def]
    url, creds = secured
    if creds is not None:
        pytest.skip("three responders need three entries; the open node covers naming")
    async with (
        connect("r1", url) as r1,
        connect("r2", url) as r2,
        connect("mute", url) as mute,
        connect("alice", url, direct=direct) as alice,
    ):
        never = asyncio.Event()

        async def silent(msg: Msg) -> str:
            await never.wait()
            return ""

        await r1.serve("review.x", lambda m: "r1")
        await r2.serve("review.x", lambda m: "r2")
        await mute.serve("review.x", silent)
        result = await alice.gather("review.x", b"", deadline=1.0)
        assert result.reached == 3 and result.missing == 1
        assert sorted(result.responders) == [Sender("r1", "n1"), Sender("r2", "n1")]
        assert result.missing_names == [Sender("mute", "n1")]
        assert sorted(m.sender for m in result) == sorted(result.responders)  # type: ignore[type-var]


async def test_status_payload_of_a_gather_is_a_list_of_names() -> None:
    from fabric.private import decode_names, encode_names

    assert decode_names(encode_names(["a@n1", "b.c@n2"])) == ["a@n1", "b.c@n2"]
    assert decode_names(b"") == []
    from fabric.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        decode_names(msgpack.packb({"a": 1}))


async def test_a_request_cannot_send_its_replies_into_someone_elses_inbox(secured) -> None:  # type: ignore[no-untyped-def]
    """A reflected forgery: mallory asks a real responder to answer into alice's pending
    inbox with content of mallory's choosing. The node refuses the request."""
    url, creds = secured
    release = asyncio.Event()
    started = asyncio.Event()
    async with (
        connect("svc", url, credential=_cred(creds, "svc")) as svc,
        connect("alice", url, credential=_cred(creds, "alice"), direct=False) as alice,
        connect("mallory", url, credential=_cred(creds, "mallory")) as mallory,
    ):

        async def slow(msg: Msg) -> str:
            started.set()
            await release.wait()
            return "genuine"

        echoed = 0

        async def echo(msg: Msg) -> bytes:
            nonlocal echoed
            echoed += 1
            return bytes(msg.data)

        await svc.serve("svc.slow", slow)
        await svc.serve("svc.echo", echo)
        pending = asyncio.ensure_future(alice.request("svc.slow", b"", timeout=10))
        await started.wait()
        await mallory.publish("svc.echo", b"reflected", reply=_pending_reply(alice))
        await mallory.flush()
        await svc.flush()
        assert echoed == 0
        release.set()
        assert (await pending).text() == "genuine"

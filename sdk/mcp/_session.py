"""MCP sessions carried by the fabric: a host side (``serve_mcp``) and a client transport
(``fabric_transport``) for ``mcp.Client``; JSON-RPC messages travel unchanged (see
``_protocol.py`` for the subjects)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server import Server
from mcp.shared.message import SessionMessage

from fabric.errors import FabricError
from sdk import Agent, Msg, Subscription

from ._protocol import host_subject, session_subject

__all__ = ["McpHost", "fabric_transport", "serve_mcp"]

log = logging.getLogger("sdk.mcp")

#: Messages buffered each way in a session before the writer waits.
_BUFFER = 32


def _dump(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode()


def _load(raw: bytes | memoryview) -> SessionMessage:
    return SessionMessage(types.jsonrpc_message_adapter.validate_json(bytes(raw), by_name=False))


class McpHost:
    """Runs one MCP server session per fabric client; ``aclose()`` ends them all."""

    def __init__(self, agent: Agent, server: Server[Any], host: str, max_sessions: int) -> None:
        self.agent = agent
        self.server = server
        self.host = host
        self.max_sessions = max_sessions
        self._inboxes: dict[str, MemoryObjectSendStream[SessionMessage | Exception]] = {}
        self._subs: list[Subscription] = []

    @property
    def sessions(self) -> int:
        return len(self._inboxes)

    async def _open(self, msg: Msg) -> AsyncIterator[bytes]:
        sid = msg.text()
        if not sid.isalnum() or len(sid) > 64 or sid in self._inboxes:
            raise ValueError("a session id is 1-64 letters or digits, not in use")
        if len(self._inboxes) >= self.max_sessions:
            raise ValueError(f"this host holds its maximum of {self.max_sessions} sessions")
        to_server, server_in = anyio.create_memory_object_stream[SessionMessage | Exception](
            _BUFFER
        )
        server_out, from_server = anyio.create_memory_object_stream[SessionMessage](_BUFFER)
        self._inboxes[sid] = to_server
        run = asyncio.ensure_future(
            self.server.run(server_in, server_out, self.server.create_initialization_options())
        )
        # A server that stops on its own (an error) ends the stream instead of leaving the
        # client waiting for its deadline.
        run.add_done_callback(lambda _: server_out.close())
        try:
            yield b""  # ready: the client may send from now on
            async for message in from_server:
                yield _dump(message)
        finally:
            # The client left (its stream was cancelled) or the server ended: end the session.
            self._inboxes.pop(sid, None)
            to_server.close()
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
            from_server.close()

    async def _deliver(self, msg: Msg) -> str:
        sid = msg.subject.rsplit(".", 1)[-1]
        inbox = self._inboxes.get(sid)
        if inbox is None:
            raise ValueError(f"no MCP session {sid!r} on this host")
        try:
            message = _load(msg.data)
        except ValueError as exc:
            # Malformed JSON-RPC ends up at the server as an exception, as on stdio.
            await inbox.send(exc)
            return "malformed"
        await inbox.send(message)
        return "ok"

    async def aclose(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.aclose()
        for inbox in list(self._inboxes.values()):
            inbox.close()


async def serve_mcp(
    agent: Agent, server: Server[Any], *, host: str | None = None, max_sessions: int = 64
) -> McpHost:
    """Host MCP sessions of ``server`` for fabric clients under ``host`` (default: the agent's
    name); clients connect with ``fabric_transport(agent, host)``.

    Raises:
        InvalidSubject: ``host`` cannot be a subject token. ConnectionLost.
    """
    name = host or agent.name
    mcp_host = McpHost(agent, server, name, max_sessions)
    mcp_host._subs.append(await agent.serve(host_subject(name), mcp_host._open))
    mcp_host._subs.append(await agent.serve(f"{host_subject(name)}.*", mcp_host._deliver))
    await agent.flush()
    return mcp_host


@contextlib.asynccontextmanager
async def fabric_transport(
    agent: Agent, host: str, *, timeout: float = 3600.0, call_timeout: float = 30.0
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """An MCP client transport over the fabric: ``mcp.Client(fabric_transport(agent, "tools"))``.

    ``timeout`` bounds the whole session, ``call_timeout`` the delivery of one message.

    Raises:
        NoResponders: nobody hosts MCP sessions as ``host``. Timeout. ConnectionLost.
    """
    sid = os.urandom(8).hex()
    inbound = agent.stream(host_subject(host), sid, timeout=timeout)
    await inbound.__anext__()  # the host's ready chunk: the session exists
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](_BUFFER)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](_BUFFER)
    target = session_subject(host, sid)

    async def reader() -> None:
        try:
            async for chunk in inbound:
                try:
                    await read_send.send(_load(chunk.data))
                except ValueError as exc:
                    await read_send.send(exc)
        except FabricError as exc:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await read_send.send(exc)
        finally:
            read_send.close()

    async def writer() -> None:
        async for message in write_recv:
            # One request per message, awaited: the host sees them in the order written.
            await agent.request(target, _dump(message), timeout=call_timeout)

    tasks = [asyncio.ensure_future(reader()), asyncio.ensure_future(writer())]
    try:
        yield read_recv, write_send
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await inbound.aclose()  # ends the session at the host
        write_send.close()
        read_recv.close()

"""The agent's link to its node: dial, handshake, heartbeat, reconnect.

``Connection`` owns exactly one live ``Link`` at a time, opened by its dialer (``_dial.py``:
the URL → transport choice lives there, not here). It dispatches every frame from the node
once, on its kind: link-level frames (PING, PONG, WELCOME, answers to control calls) are its
own, the rest go to its owner's ``ConnectionEvents``. When the link drops, the owner fails
everything in flight (``lost``), the connection dials the node list again with backoff,
handshakes, and lets the owner restore its subscriptions (``restored``). What the link may be
used for (shared memory, direct paths) is what the node's WELCOME says (``caps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Protocol

import msgpack
from typing_extensions import Buffer

from fabric.errors import (
    ConnectionLost,
    FabricError,
    RemoteProtocolError,
    Timeout,
    error_from_wire,
)
from fabric.protocol import Flags, Header, Kind, WelcomeKey, decode_header, encode_header
from fabric.transports import Link

from ._capabilities import Capabilities
from ._dial import DEFAULT_MAX_PAYLOAD, Dialer, dial
from ._shared import SharedPool

__all__ = ["Connection", "ConnectionEvents", "ConnectionState"]

log = logging.getLogger("sdk.connection")

_HANDSHAKE_TIMEOUT = 5.0


class ConnectionState(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class ConnectionEvents(Protocol):
    """What a connection reports to its owner (the agent's core), one method per kind of
    frame it does not handle itself. ``conn`` says which connection (a migrating agent has
    two)."""

    def message(self, conn: Connection, header: Header, payload: memoryview) -> None:
        """A MSG: a delivery to a subscription, or a reply on the agent's inbox."""

    def status(self, conn: Connection, header: Header, payload: memoryview) -> None:
        """A STATUS: no responders, routed counts, slow-consumer drops."""

    def error(self, conn: Connection, header: Header, payload: memoryview) -> None:
        """An ERR that answers no control call: a refused subscription or request."""

    def notice(self, conn: Connection, header: Header, payload: memoryview) -> None:
        """A CONTROL the node sent on its own (``$dir.invalidate``)."""

    def lost(self, conn: Connection) -> None:
        """The link dropped; the connection is redialling (or closed, without reconnect)."""

    async def restored(self, conn: Connection) -> None:
        """The connection is back, to this or another node: restore interest."""


class Connection:
    """Dial, handshake and keep alive one link to a node from ``urls``."""

    def __init__(
        self,
        urls: list[str],
        hello: dict[str, Any],
        events: ConnectionEvents,
        *,
        dialer: Dialer = dial,
        reconnect: bool = True,
    ) -> None:
        self._urls = urls
        self._hello = hello
        self._events = events
        self._dialer = dialer
        self._reconnect = reconnect
        #: When set, a MSG is delivered only if this returns True (migration's de-duplication).
        self._admit: Callable[[Header], bool] | None = None
        self.state = ConnectionState.CONNECTING
        self.link: Link | None = None
        self.welcome: dict[str, Any] = {}
        #: What the node lets this link be used for (from its WELCOME).
        self.caps = Capabilities()
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self._heartbeat = 2.0
        self._last_rx = time.monotonic()
        #: Frames sent to the node; the keepalive pings when it did not move in an interval.
        self._sent = 0
        self._connected = asyncio.Event()
        self._handshake: asyncio.Future[dict[str, Any]] | None = None
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._controls: dict[int, asyncio.Future[tuple[Header, memoryview]]] = {}
        self._ids = random.getrandbits(48)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnects = 0
        #: The node's shared-memory pool, when it serves one and we are on its host.
        self.shared = SharedPool()

    # -- public -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    @property
    def node(self) -> str:
        """Name of the node currently connected to ("" when none)."""
        return str(self.welcome.get(WelcomeKey.NODE, ""))

    @property
    def reconnects(self) -> int:
        return self._reconnects

    def admit(self, rule: Callable[[Header], bool] | None) -> None:
        """Deliver a MSG only when ``rule(header)`` says so (None: deliver all)."""
        self._admit = rule

    def stop_reconnecting(self) -> None:
        """A dropped link stays down from now on (a node the agent migrated away from)."""
        self._reconnect = False

    def notify(self, subject: str, payload: Buffer = b"") -> None:
        """A one-way control frame to the node (``$pool.release``).

        Raises:
            ConnectionLost: while disconnected.
        """
        self.send(Header(Kind.CONTROL, subject=subject), payload)

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def open(self) -> None:
        """Dial the first reachable node and handshake.

        Raises:
            ConnectionLost: when no node in the list answers.
        """
        await self._dial_any()
        self._spawn(self._keepalive())

    def send(self, header: Header, payload: Buffer = b"") -> None:
        """Send one frame now.

        Raises:
            ConnectionLost: while disconnected.
        """
        link = self.link
        if link is None or self.state is not ConnectionState.CONNECTED:
            raise ConnectionLost(f"not connected to a node ({self.state.value})")
        link.send(encode_header(header), payload)
        self._sent += 1

    def send_encoded(self, header: bytes, payload: Buffer = b"") -> None:
        """``send`` of a header already encoded (the SDK's cached PUB headers).

        Raises:
            ConnectionLost: while disconnected.
        """
        link = self.link
        if link is None or self.state is not ConnectionState.CONNECTED:
            raise ConnectionLost(f"not connected to a node ({self.state.value})")
        link.send(header, payload)
        self._sent += 1

    async def ready(self, deadline: float | None) -> None:
        """Wait until connected, at most until ``deadline`` (monotonic).

        Raises:
            ConnectionLost: when the connection is closed, or not back by the deadline.
        """
        if self.state is ConnectionState.CONNECTED:
            return
        if self.state is ConnectionState.CLOSED:
            raise ConnectionLost("connection is closed")
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self._connected.wait(), wait)
        except TimeoutError:
            raise ConnectionLost("node not reachable before the deadline") from None
        if not self.connected:  # woken by aclose(), not by a reconnect
            raise ConnectionLost("connection is closed")

    async def flush(self, timeout: float = 5.0) -> None:
        """Round-trip a PING: everything sent before has been processed by the node.

        Raises:
            ConnectionLost: when the link drops meanwhile. Timeout: no PONG in time.
        """
        msg_id = self.next_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[msg_id] = fut
        try:
            self.send(Header(Kind.PING, msg_id=msg_id))
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout("node did not answer PING") from None
        finally:
            self._pongs.pop(msg_id, None)

    async def call(
        self,
        subject: str,
        headers: dict[str, str] | None = None,
        payload: Buffer = b"",
        timeout: float = 5.0,
    ) -> tuple[Header, memoryview]:
        """A control-plane call to the node (``$node.*``, ``$state.*``, ``$pool.*``).

        Large payloads travel through shared memory both ways when the node's pool is
        mapped; a shared reply is copied out here and its slot given back at once.

        Raises:
            ConnectionLost, Timeout, or the typed error the node answered with.
        """
        header, data, release = await self.call_keep(subject, headers, payload, timeout)
        if release is None:
            return header, data
        try:
            return header, memoryview(bytes(data))
        finally:
            release()

    async def call_keep(
        self,
        subject: str,
        headers: dict[str, str] | None = None,
        payload: Buffer = b"",
        timeout: float = 5.0,
    ) -> tuple[Header, memoryview, Callable[[], None] | None]:
        """``call``, but a reply that came through shared memory is handed over in place:
        the caller gets the read-only view and must call the release function when done
        (None when the reply came inline).

        Raises:
            ConnectionLost, Timeout, or the typed error the node answered with.
        """
        flags = 0
        if len(payload) >= self.shared.threshold:  # type: ignore[arg-type]
            payload, flags = await self.shared.put(payload, time.monotonic() + timeout, subject)  # type: ignore[arg-type]
        reply, data = await self._exchange(subject, headers, payload, timeout, flags)
        if not reply.flags & Flags.SHM:
            return reply, data, None
        shared = self.shared
        found = shared.view(data)
        if found is None:
            raise RemoteProtocolError("the node answered with a bad shared-memory descriptor")
        view, desc = found
        region = shared.region

        def release() -> None:
            try:
                view.release()
            except BufferError:
                pass  # the caller still exports a view of it; the slot goes back anyway
            shared.release(desc, region)

        return reply, view, release

    async def _exchange(
        self,
        subject: str,
        headers: dict[str, str] | None,
        payload: Buffer,
        timeout: float,
        flags: int = 0,
    ) -> tuple[Header, memoryview]:
        """Send one CONTROL and wait for the frame answering it (by ``msg_id``).

        Raises:
            ConnectionLost, Timeout, or the typed error the node answered with.
        """
        msg_id = self.next_id()
        fut: asyncio.Future[tuple[Header, memoryview]] = (
            asyncio.get_running_loop().create_future()
        )
        self._controls[msg_id] = fut
        try:
            self.send(
                Header(
                    Kind.CONTROL,
                    subject=subject,
                    msg_id=msg_id,
                    headers=headers,
                    timeout_ms=max(1, int(timeout * 1000)),
                    flags=flags,
                ),
                payload,
            )
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout("node did not answer in time", subject=subject) from None
        finally:
            self._controls.pop(msg_id, None)

    async def _pool_call(
        self, subject: str, headers: dict[str, str] | None, timeout: float
    ) -> memoryview:
        """The pool's control plane: inline both ways (a slot is never paid for with one)."""
        _, data = await self._exchange(subject, headers, b"", timeout)
        return data

    async def aclose(self) -> None:
        """Close the link and stop reconnecting."""
        self.state = ConnectionState.CLOSED
        self._connected.set()  # wake waiters; they see CLOSED
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.link is not None:
            self.link.close()
        self.shared.detach()
        self._fail_waiters(ConnectionLost("connection closed"))

    # -- LinkHandler --------------------------------------------------------------------

    def frame_received(self, raw: bytes, payload: memoryview) -> None:
        self._last_rx = time.monotonic()
        try:
            header = decode_header(raw)
        except FabricError as exc:
            log.warning("dropping undecodable frame from node: %s", exc)
            return
        events = self._events
        match header.kind:
            case Kind.MSG:
                admit = self._admit
                if admit is None or admit(header):
                    events.message(self, header, payload)
            case Kind.STATUS:
                events.status(self, header, payload)
            case Kind.ERR:
                if self._session_gone(payload):
                    if self.link is not None:
                        self.link.close()
                elif not self._control_error(header, payload):
                    events.error(self, header, payload)
            case Kind.PONG:
                fut = self._pongs.get(header.msg_id)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            case Kind.PING:
                with contextlib.suppress(FabricError):
                    self.send(Header(Kind.PONG, msg_id=header.msg_id))
            case Kind.WELCOME:
                if self._handshake is not None and not self._handshake.done():
                    try:
                        self._handshake.set_result(dict(msgpack.unpackb(payload, raw=False)))
                    except Exception:
                        self._handshake.set_exception(ConnectionLost("node sent a bad WELCOME"))
            case Kind.CONTROL:
                call = self._controls.get(header.msg_id) if header.msg_id else None
                if call is not None:
                    if not call.done():
                        call.set_result((header, payload))
                elif not header.msg_id:
                    events.notice(self, header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionLost("link dropped during handshake"))
        if self.state is not ConnectionState.CONNECTED:
            return
        log.info("lost node %s: %s", self.node, exc or "closed")
        self.state = ConnectionState.RECONNECTING
        self._connected.clear()
        self.shared.detach()
        self._fail_waiters(ConnectionLost(f"link to node {self.node} dropped"))
        self._events.lost(self)
        if self._reconnect:
            self._spawn(self._redial())
        else:
            self.state = ConnectionState.CLOSED
            self._connected.set()

    # -- internals ----------------------------------------------------------------------

    def _session_gone(self, payload: memoryview) -> bool:
        """The node answered "no session": it restarted or dropped us; dial again."""
        try:
            code, _ = msgpack.unpackb(payload, raw=False)
        except Exception:
            return False
        return bool(code == ConnectionLost.code and self.state is ConnectionState.CONNECTED)

    def _control_error(self, header: Header, payload: memoryview) -> bool:
        """An ERR answering a control call or handshake fails that call."""
        fut: asyncio.Future[Any] | None = self._controls.get(header.msg_id)
        if fut is None and self._handshake is not None and not self._handshake.done():
            fut = self._handshake
        if fut is None or fut.done():
            return False
        try:
            code, message = msgpack.unpackb(payload, raw=False)
            fut.set_exception(error_from_wire(str(code), str(message), subject=header.subject))
        except Exception:
            fut.set_exception(ConnectionLost("node sent an undecodable error"))
        return True

    def _fail_waiters(self, exc: FabricError) -> None:
        waiting: list[asyncio.Future[Any]] = [*self._pongs.values(), *self._controls.values()]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, url: str) -> None:
        link = await self._dialer(url, self)
        loop = asyncio.get_running_loop()
        self._handshake = loop.create_future()
        self.link = link
        try:
            msg_id = self.next_id()
            link.send(encode_header(Header(Kind.HELLO, msg_id=msg_id)), msgpack.packb(self._hello))
            welcome = await asyncio.wait_for(self._handshake, _HANDSHAKE_TIMEOUT)
        except (TimeoutError, FabricError) as exc:
            link.close()
            self.link = None
            if isinstance(exc, FabricError) and not isinstance(exc, ConnectionLost):
                raise  # refused (e.g. NotAuthorized): retrying will not help
            raise ConnectionLost(f"no handshake from {url}") from None
        self.welcome = welcome
        self.max_payload = int(welcome.get(WelcomeKey.MAX_PAYLOAD, DEFAULT_MAX_PAYLOAD))
        self.caps = Capabilities.from_welcome(welcome, url)
        pool = welcome.get(WelcomeKey.POOL)
        if self.caps.shared_memory and isinstance(pool, dict):
            await self.shared.attach(
                pool,
                int(welcome.get(WelcomeKey.SESSION, 0)),
                call=self._pool_call,
                notify=self.notify,
                max_payload=self.max_payload,
            )
        self._heartbeat = float(welcome.get(WelcomeKey.HEARTBEAT, 2.0))
        self._last_rx = time.monotonic()
        self.state = ConnectionState.CONNECTED

    async def _dial_any(self) -> None:
        errors = []
        for url in self._urls:
            try:
                await self._dial(url)
            except ConnectionLost as exc:
                errors.append(str(exc))
                continue
            self._connected.set()
            return
        raise ConnectionLost("; ".join(errors) or "no node reachable")

    async def _redial(self) -> None:
        delay = 0.02
        while self.state is ConnectionState.RECONNECTING:
            try:
                await self._dial_any()
            except ConnectionLost:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            except FabricError as exc:
                log.error("node refused reconnect: %s", exc)
                await asyncio.sleep(2.0)
                continue
            self._reconnects += 1
            log.info("reconnected to node %s", self.node)
            try:
                await self._events.restored(self)
            except FabricError as exc:
                log.warning("restoring subscriptions failed: %s", exc)
            return

    async def _keepalive(self) -> None:
        """PING on our own schedule; three silent intervals mean the node is gone.

        Liveness is judged by frames *received* on both sides, so each side must hear from
        the other every interval whatever the traffic: we PING whenever we sent nothing in
        the last interval (a pure subscriber only receives, and the node would drop it) or
        heard nothing (a pure publisher only sends, and we would drop the node). The PONG is
        the node's sign of life for us.
        """
        sent = self._sent
        while self.state is not ConnectionState.CLOSED:
            await asyncio.sleep(self._heartbeat)
            if self.state is not ConnectionState.CONNECTED or self.link is None:
                sent = self._sent
                continue
            silent = time.monotonic() - self._last_rx
            if silent > 3 * self._heartbeat:
                log.warning("node %s silent for %.1fs; reconnecting", self.node, silent)
                self.link.close()
            elif silent > self._heartbeat or self._sent == sent:
                with contextlib.suppress(FabricError):
                    self.send(Header(Kind.PING, msg_id=self.next_id()))
            sent = self._sent

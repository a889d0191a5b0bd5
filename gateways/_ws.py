"""The WebSocket side of the gateway: subscribe and stream.

Both endpoints speak JSON text frames. A failure is reported as one ``{"error": {...}}`` frame
followed by a close with code 4000 + the HTTP status the same error has on the POST endpoints
(4403 not authorised, 4503 no responders, ...), so browsers, which cannot read handshake
status codes, still learn why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from fabric.errors import FabricError, NotAuthorized, SlowConsumer
from fabric.subjects import validate_pattern, validate_subject

from ._agents import AgentPool
from ._credentials import Credentials, Identity, bearer_token
from ._models import MessageIn, message_out
from ._settings import GatewaySettings
from ._status import error_body, status_for, ws_close_code

__all__ = ["install_websockets"]


def install_websockets(
    app: FastAPI, pool: AgentPool, credentials: Credentials, settings: GatewaySettings
) -> None:
    """Add ``/v1/subscribe/{subject}`` and ``/v1/stream/{subject}`` to ``app``."""

    async def fail(ws: WebSocket, status: int, code: str, message: str, **extra: Any) -> None:
        with contextlib.suppress(Exception):
            await ws.send_json(error_body(code, message, **extra))
            await ws.close(ws_close_code(status))

    async def fail_with(ws: WebSocket, exc: FabricError) -> None:
        await fail(ws, status_for(exc), exc.code, exc.message, subject=exc.subject)

    async def who(ws: WebSocket) -> Identity | None:
        token = bearer_token(ws.headers.get("authorization")) or ws.query_params.get("token")
        try:
            return credentials.identify(token)
        except NotAuthorized as exc:
            await fail(ws, 401, "unauthenticated", exc.message)
            return None

    @app.websocket("/v1/subscribe/{subject}")
    async def subscribe(ws: WebSocket, subject: str) -> None:
        await ws.accept()
        client = await who(ws)
        if client is None:
            return
        queue = ws.query_params.get("queue") or ""
        try:
            validate_pattern(subject)
            credentials.check_subscribe(client, subject, queue)
            agent = await pool.get(client)
            sub = await agent.subscribe(subject, queue=queue or None)
        except FabricError as exc:
            await fail_with(ws, exc)
            return
        # The first frame tells the client its interest reached the node (no lost messages
        # between "connected" and "subscribed").
        await agent.flush()
        await ws.send_json({"subscribed": subject, "queue": queue})
        gone = asyncio.ensure_future(_until_disconnect(ws))
        try:
            while not gone.done():
                nxt = asyncio.ensure_future(sub.next())
                await asyncio.wait((nxt, gone), return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    break
                try:
                    msg = nxt.result()
                except StopAsyncIteration:
                    await fail(ws, 504, "connection_lost", "the subscription ended")
                    break
                except SlowConsumer as exc:
                    # Keep going: the client learns it lost messages, memory stays bounded.
                    await ws.send_json(error_body(exc.code, exc.message, subject=exc.subject))
                    continue
                await ws.send_json(message_out(msg.subject, msg.data, msg.headers, msg.reply))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away mid-send
        finally:
            gone.cancel()
            await sub.aclose()

    @app.websocket("/v1/stream/{subject}")
    async def stream(ws: WebSocket, subject: str) -> None:
        await ws.accept()
        client = await who(ws)
        if client is None:
            return
        try:
            timeout = float(ws.query_params.get("timeout") or settings.default_timeout)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= settings.max_timeout:
            await fail(ws, 422, "invalid_body", f"timeout must be in (0, {settings.max_timeout}]")
            return
        try:
            raw = await ws.receive_text()
        except WebSocketDisconnect:
            return
        if len(raw) > settings.max_body:
            await fail(
                ws,
                413,
                "payload_too_large",
                "request larger than the limit",
                limit=settings.max_body,
            )
            return
        try:
            body = MessageIn.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            await fail(ws, 422, "invalid_body", str(exc).splitlines()[0])
            return
        try:
            validate_subject(subject)
            credentials.check_publish(client, subject)
            agent = await pool.get(client)
        except FabricError as exc:
            await fail_with(ws, exc)
            return
        chunks = agent.stream(
            subject, body.payload(), timeout=timeout, headers=body.headers or None
        )

        async def pump() -> None:
            async for chunk in chunks:
                await ws.send_json(message_out(subject, chunk.data, chunk.headers))

        work = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(_until_disconnect(ws))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                return  # the client left: leaving the stream (finally) cancels the responder
            failure = work.exception()
            if isinstance(failure, FabricError):
                await fail_with(ws, failure)
            elif failure is None:
                await ws.send_json({"end": True})
                await ws.close(1000)
            elif not isinstance(failure, WebSocketDisconnect | RuntimeError):
                raise failure
        finally:
            work.cancel()
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            await chunks.aclose()


async def _until_disconnect(ws: WebSocket) -> None:
    """Read until the client closes; clients send nothing after their first frame."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return

"""Refuse oversized request bodies before reading them (pure ASGI middleware).

A declared ``Content-Length`` over the limit is answered 413 without reading a byte; a chunked
body is counted as it arrives and cut off with 413 the moment it passes the limit, so a client
can never make the gateway buffer more than ``limit`` bytes of one request.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._status import error_body

__all__ = ["BodyLimit"]


class BodyLimit:
    """Wraps an ASGI app; HTTP bodies above ``limit`` bytes get 413."""

    def __init__(self, app: ASGIApp, limit: int, drain: int = 64 * 1024 * 1024) -> None:
        self.app = app
        self.limit = limit
        #: Bytes of a refused body read and dropped before the connection is closed.
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            if declared - self.limit <= self.drain:
                await self._discard(receive)
            await self._refuse(send, declared)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now and tell the app the client went away: whatever it tries to
                    # send afterwards (a 500 for the disconnect) is swallowed below.
                    refused = True
                    if message.get("more_body", False):
                        await self._discard(receive)
                    if not started:
                        await self._refuse(send, seen)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:
                raise

    async def _discard(self, receive: Receive) -> None:
        """Read and drop the rest of the body (at most ``drain`` bytes) before answering, so a
        client that sends its whole body before reading (most do) gets the 413 and not a
        reset. Nothing is kept: memory use is one chunk. (uvicorn stops delivering the body
        once the response is complete, so this must come first.)"""
        dropped = 0
        while dropped <= self.drain:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"request body of at least {size} bytes exceeds the limit of {self.limit} bytes",
                limit=self.limit,
            )
        ).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the rest of the body is not worth waiting for
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

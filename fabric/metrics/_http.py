"""The node's monitoring port: ``/metrics`` (Prometheus text) and JSON like nats-server's
``/varz``, ``/connz``, ``/subsz`` and ``/routez``, served on the node's own event loop.

A minimal HTTP/1.0 GET server: one request per connection, request head capped at 8 KiB and
5 seconds, at most 64 connections at once. It runs on the node's loop so every answer is a
consistent snapshot, taken between two frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, FabricError

__all__ = ["MetricsServer", "parse_listen"]

log = logging.getLogger("fabric.metrics")

_MAX_HEAD = 8192
_HEAD_TIMEOUT = 5.0
_MAX_CONNECTIONS = 64
SETTING = "metrics (--metrics, FABRIC_METRICS)"


def parse_listen(value: str, setting: str = SETTING) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) to a host and port.

    Raises:
        ConfigError: naming ``setting``, when the value is not HOST:PORT with a port 0-65535.
    """
    text = value.strip()
    if text.startswith(("http://", "tcp://")):
        text = text.split("://", 1)[1]
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{setting}: {value!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part.isalnum() or "-" in part for part in host.split(".")):
                raise ConfigError(f"{setting}: {host!r} is not a host name or address") from None
    return host, int(port_text)


Route = Callable[[], Any]


class MetricsServer:
    """Serves the monitoring endpoints. ``await start()``, then ``aclose()``."""

    def __init__(self, listen: str, routes: dict[str, Route], metrics: Callable[[], bytes]):
        self.host, self.port = parse_listen(listen)
        self._routes = routes
        self._metrics = metrics
        self._server: asyncio.AbstractServer | None = None
        self._open = 0
        self._closing = False

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            ConfigError: naming the setting, when the address is in use or cannot be bound.
        """
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=_MAX_HEAD
            )
        except OSError as exc:
            why = "address already in use" if exc.errno == 98 else (exc.strerror or str(exc))
            raise ConfigError(f"{SETTING}: cannot listen on {self.address}: {why}") from None
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])

    async def aclose(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= _MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            try:
                async with asyncio.timeout(_HEAD_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError):
                return
            except asyncio.LimitOverrunError:
                await self._answer(writer, 431, "text/plain", b"request head too large\n")
                return
            status, ctype, body = self._dispatch(head)
            await self._answer(writer, status, ctype, body)
        except (ConnectionError, OSError):
            pass  # the scraper went away; nothing to answer
        finally:
            self._open -= 1
            writer.close()

    def _dispatch(self, head: bytes) -> tuple[int, str, bytes]:
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return 400, "text/plain", b"bad request line\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        path = target.split("?", 1)[0].rstrip("/") or "/"
        if self._closing:
            return 503, "text/plain", b"node shutting down\n"
        if path == "/metrics":
            try:
                return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics()
            except FabricError as exc:
                return 503, "text/plain", f"{exc}\n".encode()
        route = self._routes.get(path)
        if route is None:
            listing = {"endpoints": ["/metrics", *sorted(self._routes)]}
            code = 200 if path == "/" else 404
            return code, "application/json", json.dumps(listing).encode()
        try:
            body = json.dumps(route(), default=str).encode()
        except Exception as exc:  # a snapshot racing shutdown: answer, never crash the loop
            log.debug("monitoring %s failed: %s", path, exc)
            return 503, "text/plain", b"snapshot unavailable\n"
        return 200, "application/json", body

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        async with asyncio.timeout(_HEAD_TIMEOUT):
            await writer.drain()

"""Reading another node's monitoring port (``fabric top --mesh``): one GET, JSON back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..errors import ConnectionLost, RemoteProtocolError

__all__ = ["fetch_json"]

_MAX_BODY = 16 * 1024 * 1024


async def fetch_json(address: str, path: str, timeout: float = 2.0) -> Any:
    """``GET path`` on the monitoring port at ``HOST:PORT`` and decode the JSON body.

    Raises:
        ConnectionLost: unreachable, or no answer within ``timeout``.
        RemoteProtocolError: not a 200 with a JSON body (or larger than 16 MiB).
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
                await writer.drain()
                raw = await reader.read(_MAX_BODY + 65536)
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionLost(f"monitoring port {address}: {exc or 'timed out'}") from None
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        raise RemoteProtocolError(f"monitoring port {address}{path}: {head[:60]!r}")
    try:
        return json.loads(body)
    except ValueError:
        raise RemoteProtocolError(f"monitoring port {address}{path}: not JSON") from None

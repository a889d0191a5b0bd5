"""The MCP fabric binding: subjects, in one place (no ``mcp`` import here).

* ``mcp.tools`` (gather): every agent that serves tools answers with its tool list, JSON
  ``[{"name", "description", "inputSchema"}]``; a listing is one gather over the fabric.
* ``mcp.tool.NAME`` (request): ``{"arguments": {...}, "_meta": {...}}`` in, an MCP
  ``CallToolResult`` (JSON, wire field names) out. A tool's queue group is its name, so two
  agents serving one tool share its load.
* ``mcp.host.HOST`` (stream) and ``mcp.host.HOST.SID`` (request): an MCP session over the
  fabric. The client opens a stream with its session id SID; the host runs an MCP server session
  for it and streams out every JSON-RPC message it writes (after an empty ready chunk); the client
  sends each of its JSON-RPC messages as one request to ``mcp.host.HOST.SID``, in order. Leaving
  the stream ends the session.
"""

from __future__ import annotations

import re

from fabric.subjects import validate_subject

__all__ = [
    "LIST_SUBJECT",
    "TRACEPARENT",
    "check_tool_name",
    "host_subject",
    "session_subject",
    "tool_subject",
]

LIST_SUBJECT = "mcp.tools"
#: User header (and ``_meta`` key) that carries the W3C trace context of an MCP call.
TRACEPARENT = "traceparent"
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_tool_name(name: str) -> str:
    """A tool name usable both in MCP and as one subject token.

    Raises:
        ValueError: other characters than letters, digits, ``_`` and ``-``, or over 64.
    """
    if not _TOOL_NAME.match(name):
        raise ValueError(f"tool name {name!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return name


def tool_subject(name: str) -> str:
    return f"mcp.tool.{check_tool_name(name)}"


def host_subject(host: str) -> str:
    """Where MCP sessions to ``host`` are opened. Raises InvalidSubject for a bad name."""
    validate_subject(host)
    return f"mcp.host.{host}"


def session_subject(host: str, sid: str) -> str:
    """Where the client of session ``sid`` sends its messages."""
    return f"{host_subject(host)}.{sid}"

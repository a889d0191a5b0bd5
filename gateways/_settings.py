"""Gateway settings: flags, then ``FABRIC_GATEWAY_*`` environment variables, then defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    """How the gateway reaches its node and what it accepts from clients."""

    model_config = SettingsConfigDict(env_prefix="FABRIC_GATEWAY_", extra="forbid")

    url: str | None = Field(
        None, description="Node URL the gateway dials (default: FABRIC_URL or the local node)."
    )
    listen: str = Field("127.0.0.1:8080", description="HOST:PORT the HTTP server binds.")
    auth_file: Path | None = Field(
        None,
        description=(
            "The node's TOML permissions file. A client's bearer token is the credential of "
            "one agent in it; without a file every client is the anonymous agent."
        ),
    )
    anonymous_name: str = Field(
        "gateway", description="Agent name used for every client when there is no auth file."
    )
    max_body: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest HTTP or WebSocket request body, bytes."
    )
    default_timeout: float = Field(5.0, gt=0, description="Request timeout when none is given.")
    max_timeout: float = Field(300.0, gt=0, description="Largest timeout a client may ask for.")
    a2a_max_message: int = Field(
        1024 * 1024, gt=0, description="Largest A2A JSON-RPC request, bytes (-32600 above it)."
    )
    a2a_timeout: float = Field(
        60.0, gt=0, description="How long an A2A call (or a stream) may take on the fabric."
    )
    agents: bool = Field(
        True, description="Serve /a2a/ and /mcp (needs the agents extra; off when missing)."
    )
    webrtc: bool = Field(True, description="Serve POST /v1/webrtc/offer (needs aiortc).")
    mesh_url: str | None = Field(
        None,
        description=(
            "The node's plain-TCP cluster endpoint (tcp://HOST:PORT). Set it to let edge nodes "
            "attach as leaves over WebRTC (offers with ?to=mesh)."
        ),
    )
    mesh_agents: list[str] = Field(
        default_factory=list,
        description=(
            "With an auth file: the agents whose tokens may attach an edge node (?to=mesh)."
        ),
    )

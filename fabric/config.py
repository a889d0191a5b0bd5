"""Node configuration: flags, then ``FABRIC_*`` environment, then a TOML file, then defaults."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .paths import default_socket_path
from .shm import PoolSettings

__all__ = ["NodeSettings", "load_settings"]

MiB = 1024 * 1024


class NodeSettings(BaseSettings):
    """Everything a node can be told. Every field has a default that runs as-is."""

    model_config = SettingsConfigDict(
        env_prefix="FABRIC_", extra="forbid", env_nested_delimiter="__"
    )

    name: str = Field(
        default_factory=socket.gethostname, description="Node name, unique in a mesh."
    )
    site: str = Field("local", description="Site label (cloud, edge-paris, ...).")
    socket: Path = Field(
        default_factory=default_socket_path,
        description="Unix socket for agents on this host.",
    )
    listen: str | None = Field(
        None, description="ZeroMQ endpoint for agents on other hosts, e.g. tcp://0.0.0.0:4250."
    )
    max_payload: int = Field(64 * MiB, gt=0, description="Largest payload accepted, in bytes.")
    heartbeat_interval: float = Field(
        2.0, gt=0, description="Seconds between liveness checks; 3 missed = gone."
    )
    slow_consumer_bytes: int = Field(
        64 * MiB, gt=0, description="Bytes queued for one agent before messages to it are dropped."
    )
    max_pending_bytes: int = Field(
        256 * MiB,
        gt=0,
        description="Bytes of partial (incoming) frames the node holds over all connections.",
    )
    frame_stall_timeout: float = Field(
        10.0, gt=0, description="Seconds a partial frame may go without a byte before its "
        "connection is closed.",
    )
    direct_grant_ttl: float = Field(
        300.0,
        gt=0,
        description="Seconds a grant for a direct request from another host stays valid "
        "(the requester then resolves again).",
    )
    shm: bool = Field(
        True, description="Serve a shared-memory pool to agents on this host (Linux memfd)."
    )
    pool: PoolSettings = Field(
        default_factory=PoolSettings,
        description="Shared-memory pool: classes, threshold, when_full (FABRIC_POOL__...).",
    )
    state_backend: Literal["embedded", "redis"] = Field(
        "embedded", description="Where agents' state lives: in this node, or in Redis/Valkey."
    )
    state_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis/Valkey URL when state_backend=redis."
    )
    state_namespace: str = Field("fabric", description="Key prefix in Redis/Valkey.")
    state_durability: Literal["always", "everysec", "memory"] = Field(
        "always",
        description="Embedded state: fsync every write, sync once a second, or keep in memory.",
    )
    state_path: Path | None = Field(
        None, description="Embedded state file (SQLite); default: the socket path + '.state'."
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        "off", description="OpenTelemetry span export for node hops."
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP endpoint when tracing=otlp.")
    metrics: str | None = Field(
        None, description="HOST:PORT serving /metrics and monitoring JSON; off if unset."
    )
    metrics_otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP metrics endpoint (e.g. http://127.0.0.1:4318/v1/metrics)."
    )
    # -- mesh (fabric/mesh, docs/mesh.md) --
    role: Literal["auto", "cloud", "edge"] = Field(
        "auto", description="Mesh role; auto: edge when leaf_of is set, else cloud."
    )
    cluster: str | None = Field(
        None, description="ZeroMQ endpoint where this node accepts peer nodes, tcp://HOST:PORT."
    )
    seeds: list[str] = Field(
        default_factory=list,
        description="Cluster peers to dial, tcp://HOST:PORT[?key=Z85 server public key].",
    )
    leaf_of: list[str] = Field(
        default_factory=list,
        description="Cloud nodes this edge node attaches to, in failover order (same form).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Node labels announced to peers (site is separate)."
    )
    curve_key: Path | None = Field(
        None, description="This node's CurveZMQ secret key file (fabric keys generate)."
    )
    curve_allowed: list[str] = Field(
        default_factory=list,
        description="Peer public keys accepted (Z85 or .key files); needed with curve_key.",
    )
    auth_file: Path | None = Field(
        None, description="TOML file of agent credentials and subject permissions."
    )
    mesh_heartbeat: float = Field(
        0.5, gt=0, description="Seconds between pings on peer links."
    )
    mesh_transport: Literal["auto", "zmq", "tcp"] = Field(
        "auto", description="Peer links: auto = ZeroMQ with curve keys, plain TCP without."
    )
    mesh_dead_after: float = Field(
        3.0, gt=0, description="Seconds of silence after which a peer node counts as gone."
    )

    def embedded_state_path(self) -> Path:
        """Where the embedded state is kept: ``state_path``, else beside the socket, so that a
        node restarted on the same socket finds its state."""
        return self.state_path or self.socket.with_name(self.socket.name + ".state")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _TOML_FILE.get("path")
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


_TOML_FILE: dict[str, Path] = {}


def load_settings(config_file: Path | None = None, **overrides: object) -> NodeSettings:
    """Build settings: ``overrides`` (flags) win over environment, over the TOML file.

    Raises:
        pydantic.ValidationError: when a value is out of range or a key is unknown.
    """
    if config_file is not None:
        _TOML_FILE["path"] = config_file
    try:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return NodeSettings(**clean)  # type: ignore[arg-type]
    finally:
        _TOML_FILE.pop("path", None)

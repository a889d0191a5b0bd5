"""Agent Fabric broker node: wire protocol, routing, transports, mesh, pool, telemetry, CLI."""

__version__ = "0.1.0"

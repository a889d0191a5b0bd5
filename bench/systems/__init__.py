"""Systems under test: the fabric and every baseline, by name."""

from __future__ import annotations

from typing import Any

from bench.systems._aiohttp import AiohttpSystem
from bench.systems._base import Client, System, WorkerInfo
from bench.systems._fabric import (
    FabricCrossNodeDirectSystem,
    FabricCrossNodeSystem,
    FabricLatencySystem,
    FabricSystem,
)
from bench.systems._fastapi import FastapiSystem
from bench.systems._floor import FloorTcpSystem, FloorUnixSystem
from bench.systems._memcpy import MemcpySystem
from bench.systems._nats import NatsSystem
from bench.systems._zenoh import ZenohSystem
from fabric.errors import ConfigError

__all__ = ["SYSTEMS", "Client", "System", "WorkerInfo", "get_system", "system_names"]

#: Every system, in the order the table shows them (the fabric first, the reference last).
SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (
        FabricSystem,
        FabricLatencySystem,
        FabricCrossNodeSystem,
        FabricCrossNodeDirectSystem,
        FastapiSystem,
        AiohttpSystem,
        NatsSystem,
        ZenohSystem,
        MemcpySystem,
        FloorUnixSystem,
        FloorTcpSystem,
    )
}


def system_names(*, include_reference: bool = False) -> list[str]:
    """Names ``--systems`` accepts (reference rows are added by themselves)."""
    return [n for n, cls in SYSTEMS.items() if include_reference or not cls.reference]


def get_system(name: str, options: dict[str, Any] | None = None) -> System:
    """A fresh instance of system ``name``.

    Raises:
        ConfigError: no system has that name.
    """
    try:
        cls = SYSTEMS[name]
    except KeyError:
        raise ConfigError(f"unknown system {name!r} (known: {', '.join(SYSTEMS)})") from None
    return cls(options)

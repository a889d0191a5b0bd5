"""Finding every node of a mesh from one: follow the ``metrics`` label peers announce
(``HOST:PORT`` of their monitoring port) breadth first, reading ``/status`` and ``/peers``.
Used by ``fabric top --mesh`` and the gateway's dashboard; ``mesh_graph`` is pure."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import FabricError
from ._client import fetch_json

__all__ = ["MAX_MESH_NODES", "crawl", "http_snapshot", "mesh_graph"]

#: At most this many nodes are read in one crawl.
MAX_MESH_NODES = 64

_ROLE_OF_KIND = {"cluster": "cloud", "hub": "cloud", "leaf": "edge"}


async def http_snapshot(address: str, timeout: float) -> dict[str, Any]:
    """A node's snapshot from its monitoring port (``/status`` merged with ``/peers``).

    Raises:
        ConnectionLost, RemoteProtocolError: as ``fetch_json``.
    """
    status, peers = await asyncio.gather(
        fetch_json(address, "/status", timeout), fetch_json(address, "/peers", timeout)
    )
    return dict(status) | {"mesh": {"role": peers.get("role"), "peers": peers.get("peers", [])}}


async def crawl(
    known: dict[str, dict[str, Any]], timeout: float, limit: int = MAX_MESH_NODES
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """From the snapshots in ``known`` (by node name), read every node reachable through
    peers' ``metrics`` labels. Returns (snapshots found, by name; failures, name -> reason);
    ``known`` itself is not re-read."""
    found: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    polled = set(known)
    frontier = list(known.values())
    while frontier and len(polled) < limit:
        wanted: dict[str, str] = {}
        for snap in frontier:
            for peer in (snap.get("mesh") or {}).get("peers", []):
                address = (peer.get("labels") or {}).get("metrics")
                if address and peer["name"] not in polled and peer["name"] not in wanted:
                    wanted[peer["name"]] = address
        wanted = dict(list(wanted.items())[: limit - len(polled)])
        results = await asyncio.gather(
            *(http_snapshot(a, timeout) for a in wanted.values()), return_exceptions=True
        )
        frontier = []
        for name, result in zip(wanted, results, strict=True):
            polled.add(name)
            if isinstance(result, dict):
                found[name] = result
                frontier.append(result)
            elif isinstance(result, FabricError):
                failed[name] = f"{type(result).__name__}: {result}"
            else:
                raise result
    return found, failed


def mesh_graph(snapshots: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Nodes and links (each once, with the best known round trip) from node snapshots.

    A node only seen as somebody's peer is in the graph too, with what that peer said of it.
    """
    nodes: dict[str, dict[str, Any]] = {}
    links: dict[tuple[str, str], dict[str, Any]] = {}
    for name, snap in snapshots.items():
        mesh = snap.get("mesh") or {}
        nodes[name] = {"name": name, "site": snap.get("site"), "role": mesh.get("role"),
                       "seen": True}
        for peer in mesh.get("peers", []):
            other = peer["name"]
            nodes.setdefault(other, {"name": other, "site": peer.get("site"),
                                     "role": _ROLE_OF_KIND.get(peer.get("kind", "")),
                                     "seen": False})
            a, b = sorted((name, other))
            link = links.setdefault((a, b), {"a": a, "b": b, "kind": "cluster",
                                             "state": peer.get("state", "up"), "rtt_ms": None})
            if peer.get("kind") in ("leaf", "hub"):
                link["kind"] = "leaf"
            if peer.get("state", "up") != "up":
                link["state"] = peer["state"]
            rtt = peer.get("rtt_ms")
            if rtt is not None and (link["rtt_ms"] is None or rtt < link["rtt_ms"]):
                link["rtt_ms"] = rtt
    return {"nodes": sorted(nodes.values(), key=lambda n: n["name"]),
            "links": sorted(links.values(), key=lambda x: (x["a"], x["b"]))}

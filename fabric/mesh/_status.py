"""``Mesh.status()``: peers, links, round trips and interest, for ``fabric mesh``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._mesh import Mesh


def mesh_status(mesh: Mesh) -> dict[str, Any]:
    return {
        "role": mesh.role.value,
        "cluster": mesh.endpoint,
        "peers": [
            {
                "name": name,
                "kind": p.kind.value,
                "site": p.info.site,
                "labels": p.info.labels,
                "dialed": p.end.dialed,
                "rtt_ms": None if p.end.state.rtt is None else round(p.end.state.rtt * 1e3, 3),
                "state": p.end.state.state.value,
                "forwarded": mesh.forwarded_to.get(name, 0),
                "interest": sorted([k[0], k[1]] for k in mesh.router.remote.remote_keys(name)),
            }
            for name, p in sorted(mesh._peers.items())
        ],
        "local_interest": len(mesh.router.remote.local),
        "open_tallies": len(mesh.router.tallies),
        "stats": dict(mesh.stats),
    }

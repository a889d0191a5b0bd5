"""Every name the node, the mesh and the SDK must spell alike, spelled once.

Subjects of the control calls themselves are in ``_calls.py`` (one definition per call);
this module holds the prefixes, header names and reserved subjects around them.
"""

from __future__ import annotations

__all__ = [
    "CHUNKS_HEADER",
    "CONTROL_PREFIXES",
    "DIRECT_GRANT",
    "INBOX_PREFIX",
    "MESH_HELLO",
    "MESH_INTEREST",
    "MESH_REFUSE",
    "MESH_RESOLVE",
    "MESH_RESOLVED",
    "MESH_WELCOME",
    "MIGRATE_PREFIX",
    "MIGRATE_SUFFIX",
    "PREFER_HEADER",
    "SENDER_HEADER",
    "STATE_PREFIX",
    "SYSTEM_PREFIX",
    "PoolOp",
    "WelcomeKey",
    "WelcomePath",
    "WelcomePool",
    "migrate_subject",
]

#: Reply subjects start with this; they are used once, so they bypass the match cache, and
#: only their owner may read them (fabric/private.py).
INBOX_PREFIX = "_INBOX."
#: Operator-to-agent subjects live under this (``fabric agent migrate``).
SYSTEM_PREFIX = "_FABRIC."
#: ``_FABRIC.agent.<name>.migrate``: where an operator asks agent ``name`` to migrate.
MIGRATE_PREFIX = SYSTEM_PREFIX + "agent."
MIGRATE_SUFFIX = ".migrate"

#: Every control call of one family (``$state.get``, ``$state.put``, …) starts with it.
STATE_PREFIX = "$state."
#: Subjects that are control calls, never user subjects (a user subject cannot start with $).
CONTROL_PREFIXES = ("$node.", "$agent.", "$pool.", "$dir.", STATE_PREFIX)

#: User header the node writes on every reply it routes: ``agent@node`` of the responder.
#: Whatever a responder puts there itself is overwritten.
SENDER_HEADER = "fabric-sender"
#: User header of a request that prefers queue members with these labels: ``k=v,k2=v2``.
PREFER_HEADER = "fabric-prefer"
#: User header of a stream-open whose requester splits ``STREAM_CHUNKS`` batches (value
#: ``1``); the responder's SDK removes it before the handler sees the request.
CHUNKS_HEADER = "fabric-chunks"

#: Node-to-node CONTROL subjects (fabric/mesh/_protocol.py has their payloads).
MESH_HELLO = "$mesh.hello"
MESH_WELCOME = "$mesh.welcome"
MESH_REFUSE = "$mesh.refuse"
MESH_INTEREST = "$mesh.interest"
#: A node asks a peer for its direct TCP responders and grants (fabric/mesh/_direct.py).
MESH_RESOLVE = "$mesh.resolve"
MESH_RESOLVED = "$mesh.resolved"
#: Requester → responder on a direct TCP link: the grant for the requests that follow.
DIRECT_GRANT = "$direct.grant"


def migrate_subject(name: str) -> str:
    """The subject an operator uses to ask agent ``name`` to migrate."""
    return f"{MIGRATE_PREFIX}{name}{MIGRATE_SUFFIX}"


class WelcomeKey:
    """Keys of the WELCOME map (node → agent). Optional ones are capabilities: a node
    announces ``pool`` only to agents that can map its shared memory."""

    NODE = "node"
    SITE = "site"
    SESSION = "session"
    MAX_PAYLOAD = "max_payload"
    HEARTBEAT = "heartbeat"
    #: Identity of the state store; two nodes with the same one share state.
    STATE = "state"
    #: The root every inbox of this agent must live under.
    INBOX = "inbox"
    #: Capability: the shared-memory pool (socket, secret, threshold, …).
    POOL = "pool"
    #: Which host-local data paths this session may use, a map of ``WelcomePath`` keys to
    #: bools; nodes before it said nothing and the SDK judged by its URL (sdk/_capabilities.py).
    PATHS = "paths"
    #: Capability: the key this agent checks direct grants with (hex; fabric/grants.py),
    #: sent only to an agent that said at HELLO it listens on TCP (``direct_tcp``).
    GRANT_KEY = "grant_key"


class WelcomePath:
    """Keys of the WELCOME's ``paths`` map."""

    #: The agent may map the node's shared-memory pool.
    SHM = "shm"
    #: The node took the agent's direct socket (its directory may send local requesters to it).
    DIRECT = "direct"


class WelcomePool:
    """Keys of the WELCOME's ``pool`` map that more than one side reads (fabric/shm/_service.py
    writes the map)."""

    #: Per slot class, how many slots the agent may lease ahead of need (nodes before it
    #: said nothing: no pre-leasing).
    PRELEASE = "prelease"


class PoolOp:
    """Requests on the node's pool socket (``node.sock.pool``, fabric/shm/_service.py): one
    msgpack map ``{op, session, secret, ...}`` per connection."""

    #: The pool layout, with the segment fds attached to the answer (the default op).
    LAYOUT = "pool"
    #: ``size``, one sealed memfd attached: an immutable blob the agent wrote.
    BLOB_PUT = "blob-put"
    #: ``ref``: the blob's fd, or ``{inline: true}`` for one to fetch as bytes.
    BLOB_GET = "blob-get"
    #: ``key``: a migrating agent's value as its sealed memfd (and, when durable, a read-only
    #: fd of its file), answered ``{size, version, fence, durable}``; ``{inline: true}`` and
    #: no fd below the pool threshold (docs/migration.md).
    STATE_TAKE = "state-take"
    #: ``key, size, version, fence``, those fds attached: the new node adopts the value
    #: without a copy and answers ``{version}``.
    STATE_RESTORE = "state-restore"

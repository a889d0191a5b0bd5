"""Who may join and what they may do: agent credentials, subject permissions, CurveZMQ keys.

Agents authenticate to their node with a credential named in HELLO; which subjects an agent
may publish to and subscribe to is configured per agent in a TOML file::

    [defaults]                          # applies to agents without their own entry; optional
    publish = { allow = [">"], deny = [] }

    [agents.planner]
    credential_sha256 = "9f86d0...."     # or: credential = "plain text" (tests, demos)
    publish = { allow = ["tasks.>"], deny = ["tasks.admin.>"] }
    subscribe = { allow = ["events.*", "tasks.run workers"], deny = ["events.secret"] }

Rules: a subject is allowed when one ``allow`` pattern matches it and no ``deny`` pattern
does (deny wins). A subscription pattern is allowed when an ``allow`` pattern covers every
subject it could match and no ``deny`` pattern overlaps it at all. An entry ``"PATTERN QUEUE"``
only allows (or denies) queue subscriptions to group QUEUE; a bare pattern covers plain and
queue subscriptions alike. Reply inboxes are not governed by this file but by ownership
(fabric/private.py): an agent reads only its own and answers only into those it was handed;
its own control subject (``_FABRIC.agent.NAME.migrate``) is always open to it. Missing
``publish``/``subscribe`` tables allow nothing.

Node-to-node keys are CurveZMQ key pairs in ZeroMQ's certificate format (``fabric keys
generate``); see ``load_keypair`` and ``resolve_public_key``.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, NotAuthorized
from .private import is_control_subject_of
from .routing import INBOX_PREFIX
from .subjects import matches, validate_pattern

__all__ = [
    "Authorizer",
    "Permissions",
    "Rules",
    "covers",
    "generate_keypair",
    "load_keypair",
    "overlaps",
    "resolve_public_key",
]


def covers(outer: str, inner: str) -> bool:
    """True when every subject ``inner`` can match is also matched by ``outer``."""
    a, b = outer.split("."), inner.split(".")
    for i, tok in enumerate(a):
        if tok == ">":
            return len(b) > i
        if i >= len(b):
            return False
        other = b[i]
        if other == ">":
            return False
        if tok == "*":
            continue
        if other == "*" or other != tok:
            return False
    return len(a) == len(b)


def overlaps(p: str, q: str) -> bool:
    """True when some literal subject matches both patterns."""
    a, b = p.split("."), q.split(".")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Entry:
    pattern: str
    #: Only queue subscriptions to this group ("" = any subscription).
    queue: str = ""

    @classmethod
    def parse(cls, text: str) -> _Entry:
        parts = text.split()
        if len(parts) not in (1, 2):
            raise ConfigError(f"permission entry {text!r}: use 'PATTERN' or 'PATTERN QUEUE'")
        validate_pattern(parts[0])
        return cls(parts[0], parts[1] if len(parts) == 2 else "")


@dataclass(frozen=True, slots=True)
class Rules:
    """One direction's allow and deny lists."""

    allow: tuple[_Entry, ...] = ()
    deny: tuple[_Entry, ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> Rules:
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or set(raw) - {"allow", "deny"}:
            raise ConfigError(f"{where}: expected a table with 'allow' and 'deny' lists")
        try:
            return cls(
                tuple(_Entry.parse(str(x)) for x in raw.get("allow", [])),
                tuple(_Entry.parse(str(x)) for x in raw.get("deny", [])),
            )
        except Exception as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def may_publish(self, subject: str) -> bool:
        if any(not e.queue and matches(e.pattern, subject) for e in self.deny):
            return False
        return any(not e.queue and matches(e.pattern, subject) for e in self.allow)

    def may_subscribe(self, pattern: str, queue: str) -> bool:
        for e in self.deny:
            if (not e.queue or e.queue == queue) and overlaps(e.pattern, pattern):
                return False
        return any(
            (not e.queue or e.queue == queue) and covers(e.pattern, pattern) for e in self.allow
        )


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one agent may do, and how it proves who it is."""

    publish: Rules = field(default_factory=Rules)
    subscribe: Rules = field(default_factory=Rules)
    #: sha256 hex of the credential; None: no credential needed (only in ``[defaults]``).
    credential_sha256: str | None = None


class Authorizer:
    """Answers "may this agent join / publish here / subscribe there". Pure, no I/O after load.

    Decisions are cached per (agent, subject); the cache is bounded and cleared when full.
    """

    _CACHE_LIMIT = 4096

    def __init__(self, agents: dict[str, Permissions], defaults: Permissions | None) -> None:
        self._agents = agents
        self._defaults = defaults
        self._pub_cache: dict[tuple[str, str], bool] = {}

    @classmethod
    def from_file(cls, path: Path) -> Authorizer:
        """Load the TOML permissions file described in the module docstring.

        Raises:
            ConfigError: unreadable file, unknown keys, or a malformed pattern.
        """
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read auth file {path}: {exc}") from None
        unknown = set(data) - {"agents", "defaults"}
        if unknown:
            raise ConfigError(f"auth file {path}: unknown sections {sorted(unknown)}")
        agents = {
            str(name): _permissions(entry, f"agents.{name}", need_credential=True)
            for name, entry in (data.get("agents") or {}).items()
        }
        defaults = data.get("defaults")
        return cls(
            agents,
            _permissions(defaults, "defaults", need_credential=False) if defaults else None,
        )

    def authenticate(self, name: str, credential: Any) -> None:
        """Check the credential an agent sent in HELLO.

        Raises:
            NotAuthorized: unknown agent (and no defaults), or a wrong or missing credential.
        """
        perms = self._agents.get(name)
        if perms is None:
            if self._defaults is None:
                raise NotAuthorized(f"agent {name!r} is not known to this node")
            perms = self._defaults
        if perms.credential_sha256 is None:
            return
        if type(credential) is not str:
            raise NotAuthorized(f"agent {name!r} must present a credential")
        digest = hashlib.sha256(credential.encode()).hexdigest()
        if not hmac.compare_digest(digest, perms.credential_sha256):
            raise NotAuthorized(f"wrong credential for agent {name!r}")

    def _perms(self, name: str) -> Permissions:
        perms = self._agents.get(name) or self._defaults
        if perms is None:
            raise NotAuthorized(f"agent {name!r} is not known to this node")
        return perms

    def check_publish(self, name: str, subject: str) -> None:
        """Raises ``NotAuthorized`` unless ``name`` may publish on the literal ``subject``."""
        if subject.startswith(INBOX_PREFIX):
            return
        key = (name, subject)
        allowed = self._pub_cache.get(key)
        if allowed is None:
            allowed = self._perms(name).publish.may_publish(subject)
            if len(self._pub_cache) >= self._CACHE_LIMIT:
                self._pub_cache.clear()
            self._pub_cache[key] = allowed
        if not allowed:
            raise NotAuthorized(f"agent {name!r} may not publish here", subject=subject)

    def check_subscribe(self, name: str, pattern: str, queue: str = "") -> None:
        """Raises ``NotAuthorized`` unless ``name`` may subscribe to ``pattern`` (in ``queue``)."""
        if pattern.startswith(INBOX_PREFIX) or is_control_subject_of(name, pattern):
            # Inbox ownership is the node's rule (fabric/private.py); an agent's own control
            # subject stays reachable whatever its permissions (operators migrate agents).
            return
        if not self._perms(name).subscribe.may_subscribe(pattern, queue):
            what = f"queue {queue!r} on " if queue else ""
            raise NotAuthorized(f"agent {name!r} may not subscribe to {what}this", subject=pattern)


def _permissions(raw: Any, where: str, *, need_credential: bool) -> Permissions:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(raw) - {"credential", "credential_sha256", "publish", "subscribe"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    digest = raw.get("credential_sha256")
    if digest is None and raw.get("credential") is not None:
        digest = hashlib.sha256(str(raw["credential"]).encode()).hexdigest()
    if digest is None and need_credential:
        raise ConfigError(f"{where}: needs 'credential' or 'credential_sha256'")
    return Permissions(
        Rules.parse(raw.get("publish"), f"{where}.publish"),
        Rules.parse(raw.get("subscribe"), f"{where}.subscribe"),
        None if digest is None else str(digest).lower(),
    )


# -- CurveZMQ keys ---------------------------------------------------------------------------


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600) in ZeroMQ's format.

    Returns (public file, secret file).

    Raises:
        ConfigError: the directory cannot be written, or libzmq lacks CURVE.
    """
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        public, secret = zmq.auth.create_certificates(str(directory), name)
        Path(secret).chmod(0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write keys to {directory}: {exc}") from None
    return Path(public), Path(secret)


def load_keypair(path: Path) -> tuple[bytes, bytes]:
    """Read a secret key file written by ``generate_keypair``: (public, secret), Z85.

    Raises:
        ConfigError: the file is missing, unreadable, or holds no secret key.
    """
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load curve key {path}: {exc}") from None
    if not secret:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def resolve_public_key(value: str) -> bytes:
    """A peer key given as 40 Z85 characters or as the path of a ``.key`` file.

    Raises:
        ConfigError: neither a Z85 key nor a readable certificate.
    """
    import zmq.auth

    if len(value) == 40 and not Path(value).exists():
        return value.encode()
    try:
        public, _ = zmq.auth.load_certificate(value)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{value!r} is neither a Z85 public key nor a key file: {exc}") from None
    return bytes(public)

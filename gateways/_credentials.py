"""Who a client is: a bearer token is the credential of one agent in the node's auth file.

The gateway reuses the node's permissions file (``fabric/auth.py``) instead of keeping a second
list: the token a client presents is the same credential the agent would send in HELLO, so one
file says who may do what whether an agent speaks the SDK or HTTP. Without a file the gateway
is open and every client acts as one anonymous agent (local development, ``fabric up``).

Pure: no I/O after loading.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fabric.auth import Authorizer
from fabric.errors import ConfigError, NotAuthorized

__all__ = ["Credentials", "Identity", "bearer_token"]


@dataclass(frozen=True, slots=True)
class Identity:
    """The agent a client acts as, and the credential it proves it with."""

    name: str
    credential: str | None = None


class Credentials:
    """Maps bearer tokens to agents and answers permission questions."""

    def __init__(self, authorizer: Authorizer | None, digests: dict[str, str], anonymous: str):
        self._authorizer = authorizer
        #: sha256 hex of a credential -> agent name.
        self._digests = digests
        self._anonymous = anonymous

    @classmethod
    def open(cls, anonymous: str = "gateway") -> Credentials:
        """No auth file: every client is ``anonymous`` and may do anything."""
        return cls(None, {}, anonymous)

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        """Load the node's TOML permissions file (format in ``fabric/auth.py``).

        Raises:
            ConfigError: unreadable file, malformed entries, or two agents sharing a credential.
        """
        authorizer = Authorizer.from_file(path)  # validates the whole file first
        data = tomllib.loads(path.read_text())
        digests: dict[str, str] = {}
        for name, entry in (data.get("agents") or {}).items():
            digest = entry.get("credential_sha256")
            if digest is None:
                digest = hashlib.sha256(str(entry["credential"]).encode()).hexdigest()
            digest = str(digest).lower()
            if digest in digests:
                raise ConfigError(
                    f"auth file {path}: agents {digests[digest]!r} and {name!r} share a "
                    "credential; the gateway could not tell them apart"
                )
            digests[digest] = str(name)
        return cls(authorizer, digests, "gateway")

    @property
    def enforcing(self) -> bool:
        """Whether clients must present a token."""
        return self._authorizer is not None

    def identify(self, token: str | None) -> Identity:
        """The agent whose credential ``token`` is.

        Raises:
            NotAuthorized: a token is required and is missing or unknown.
        """
        if self._authorizer is None:
            return Identity(self._anonymous)
        if not token:
            raise NotAuthorized("a bearer token is required")
        digest = hashlib.sha256(token.encode()).hexdigest()
        # Looking up the token's hash leaks nothing useful about other tokens through timing;
        # the final check is the node's own constant-time comparison.
        name = self._digests.get(digest)
        if name is None:
            raise NotAuthorized("unknown bearer token")
        self._authorizer.authenticate(name, token)
        return Identity(name, token)

    def check_publish(self, who: Identity, subject: str) -> None:
        """Raises ``NotAuthorized`` unless ``who`` may publish (or request) on ``subject``."""
        if self._authorizer is not None:
            self._authorizer.check_publish(who.name, subject)

    def check_subscribe(self, who: Identity, pattern: str, queue: str = "") -> None:
        """Raises ``NotAuthorized`` unless ``who`` may subscribe to ``pattern``."""
        if self._authorizer is not None:
            self._authorizer.check_subscribe(who.name, pattern, queue)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()

"""Dialers: the one place where a node URL becomes a transport.

A ``Connection`` never looks at a URL's scheme: it calls its dialer with the URL and the
handler the link must report to, and gets a ``Link`` back. The default dialer picks the
transport from a table of schemes; another transport (a WebRTC data channel, an in-memory
pair in a test) plugs in by registering its scheme or by handing ``Connection`` a dialer of
its own. What the agent may do over the link it got (shared memory, direct paths) is the
node's to say, in its WELCOME (``_capabilities.py``), not the URL's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fabric.errors import ConfigError
from fabric.transports import Link, LinkHandler, open_unix_link, open_zmq_link

__all__ = ["DEFAULT_MAX_PAYLOAD", "Dialer", "dial", "parse_urls", "register_scheme"]

#: Largest frame accepted from the node before its WELCOME says otherwise.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024

#: Opens a link to the node at a URL, reporting to the handler.
Dialer = Callable[[str, LinkHandler], Awaitable[Link]]


async def _open_unix(url: str, handler: LinkHandler) -> Link:
    return await open_unix_link(url[len("unix://") :], DEFAULT_MAX_PAYLOAD, handler)


async def _open_zmq(url: str, handler: LinkHandler) -> Link:
    return await open_zmq_link(url, handler)


#: URL prefix → opener. Checked in order; ``parse_urls`` accepts exactly these.
_SCHEMES: dict[str, Dialer] = {
    "unix://": _open_unix,
    "tcp://": _open_zmq,
    "ipc://": _open_zmq,
}


def register_scheme(prefix: str, opener: Dialer | None) -> None:
    """Let the default dialer open URLs starting with ``prefix`` (``"webrtc://"``) with
    ``opener``; None removes the scheme again."""
    if opener is None:
        _SCHEMES.pop(prefix, None)
    else:
        _SCHEMES[prefix] = opener


def _opener(url: str) -> Dialer | None:
    for prefix, opener in _SCHEMES.items():
        if url.startswith(prefix):
            return opener
    return None


async def dial(url: str, handler: LinkHandler) -> Link:
    """The default dialer: the transport registered for the URL's scheme.

    Raises:
        ConfigError: no transport for this scheme. ConnectionLost: the node is unreachable.
    """
    opener = _opener(url)
    if opener is None:
        raise ConfigError(f"unsupported node URL {url!r}: use unix:///path or tcp://host:port")
    return await opener(url, handler)


def parse_urls(url: str) -> list[str]:
    """Split a comma-separated node list and check each scheme.

    Raises:
        ConfigError: for an empty list or an unknown scheme.
    """
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ConfigError("no node URL given")
    for u in urls:
        if _opener(u) is None:
            raise ConfigError(f"unsupported node URL {u!r}: use unix:///path or tcp://host:port")
    return urls

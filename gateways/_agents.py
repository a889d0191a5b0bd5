"""The SDK agents the gateway holds for its clients: one per authenticated agent name.

Each client credential gets its own agent connection, so the node sees (and checks) the real
agent name and credential of every HTTP client, exactly as if it had used the SDK. Agents are
opened on first use and kept until the gateway stops; the SDK reconnects them by itself.
"""

from __future__ import annotations

import asyncio
import contextlib

from fabric.errors import ConnectionLost, NotAuthorized
from sdk import Agent, connect

from ._credentials import Identity

__all__ = ["AgentPool"]


class AgentPool:
    """Lazily opened agents, keyed by agent name."""

    def __init__(self, url: str | None, *, default_timeout: float = 5.0) -> None:
        self._url = url
        self._default_timeout = default_timeout
        self._agents: dict[str, Agent] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stack = contextlib.AsyncExitStack()
        self._closed = False

    @property
    def url(self) -> str | None:
        return self._url

    def __len__(self) -> int:
        return len(self._agents)

    def agents(self) -> list[Agent]:
        return list(self._agents.values())

    async def get(self, who: Identity) -> Agent:
        """The connected agent for ``who``, opening it on first use.

        Raises:
            ConnectionLost: the node cannot be reached (or the gateway is closing).
            NotAuthorized: the node refused the agent's credential.
        """
        agent = self._agents.get(who.name)
        if agent is not None:
            return agent
        lock = self._locks.setdefault(who.name, asyncio.Lock())
        async with lock:
            agent = self._agents.get(who.name)
            if agent is not None:
                return agent
            if self._closed:
                raise ConnectionLost("gateway is shutting down")
            agent = await self._stack.enter_async_context(
                connect(
                    who.name,
                    self._url,
                    credential=who.credential,
                    labels={"via": "gateway"},
                    default_timeout=self._default_timeout,
                )
            )
            self._agents[who.name] = agent
            return agent

    async def probe(self) -> tuple[bool, str]:
        """Whether the node answers, and its name: a pooled agent if one is connected,
        otherwise a short-lived connection (a refusal still proves the node is up)."""
        for agent in self._agents.values():
            if agent.connected:
                return True, agent.node
        try:
            async with connect("gateway-probe", self._url, reconnect=False) as agent:
                return True, agent.node
        except NotAuthorized:
            return True, ""
        except ConnectionLost:
            return False, ""

    async def aclose(self) -> None:
        """Close every agent."""
        self._closed = True
        self._agents.clear()
        await self._stack.aclose()

"""Carries published events to the hub of every node.

The embedded default is :class:`MemoryBroker`: one process, so publishing is
a plain call into the local hub. A Redis broker (several nodes) implements the
same two methods over PUBLISH/SUBSCRIBE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .protocol import Event

Deliver = Callable[[Event], None]


class Broker(Protocol):
    """Fan an event out to every node's hub."""

    def publish(self, event: Event) -> None: ...

    async def close(self) -> None: ...


class MemoryBroker:
    """Single-process broker: delivery is a synchronous local call."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, event: Event) -> None:
        self._deliver(event)

    async def close(self) -> None:
        return None

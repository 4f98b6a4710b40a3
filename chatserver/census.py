"""The census: what every other node reports about itself, for operators.

The dashboard, the admin API and ``chatserver admin`` show the whole chat:
each node's connections (with a node column), rooms and counters. A node
serves its own from memory; the census brings the others'. Embedded there
are no others. In Redis mode (``redis_census.py``) each node publishes a
snapshot every ``SNAPSHOT_INTERVAL`` seconds, but only while someone looks,
so an unwatched cluster pays nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

Snapshot = dict[str, Any]  # {"node", "at", "stats", "rooms", "rows"}

SNAPSHOT_INTERVAL = 2.0  # seconds; rows of other nodes are at most this old (plus a tick)


class Census(Protocol):
    """Snapshots of the other nodes."""

    async def want(self) -> bool:
        """Ask every node to publish (for the next while); True if nobody had asked
        lately, so the snapshots are not there yet."""

    async def wanted(self) -> bool:
        """Whether someone asked lately (so this node should publish)."""

    def publish(self, snapshot: Snapshot) -> None:
        """This node's snapshot."""

    async def others(self) -> list[Snapshot]:
        """The latest snapshot of every other live node."""


class LocalCensus:
    """One process: there are no other nodes."""

    async def want(self) -> bool:
        return False

    async def wanted(self) -> bool:
        return False

    def publish(self, snapshot: Snapshot) -> None:
        return None

    async def others(self) -> list[Snapshot]:
        return []

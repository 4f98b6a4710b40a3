"""A private ``redis-server`` for one benchmark run, and its command counters.

Every run gets its own Redis on a free port, with persistence off (``--save ''
--appendonly no``) and its working directory in a temporary directory, so no
run sees another's keys or counters and the machine's own Redis (if any, on
6379) is never touched. ``INFO commandstats`` before and after the measured
phase gives the commands the chat nodes sent for the messages of that phase.
"""

import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from benchmarks.server import ServerCommand, ServerFailed, ServerProcess, running_server

BINARY = "redis-server"
READY_TEXT = b"Ready to accept connections"
# Our own reads of the counters; every other command is the nodes'.
OWN_COMMANDS = frozenset({"info"})
ARGV = (
    *(BINARY, "--port", "{port}", "--bind", "127.0.0.1", "--dir", "{tmp}"),
    *("--save", "", "--appendonly", "no", "--daemonize", "no"),
)
SHOWN = "redis-server --port {port} --bind 127.0.0.1 --dir {tmp} --save '' --appendonly no"


def redis_missing() -> str | None:
    """Why no private Redis can be started here, or ``None`` if one can."""
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not on PATH (Debian: apt-get install redis-server)"
    return None


def calls_between(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Commands called between two counter readings, ours left out."""
    names = set(after) - OWN_COMMANDS
    calls = {name: after[name] - before.get(name, 0) for name in sorted(names)}
    return {name: n for name, n in calls.items() if n}


@dataclass
class RedisServer:
    """A running private Redis and one connection to read its counters."""

    process: ServerProcess
    client: "Redis"

    @property
    def url(self) -> str:
        """The URL nodes are given (``--redis-url``)."""
        return f"redis://127.0.0.1:{self.process.port}/0"

    @property
    def pid(self) -> int:
        """Process id, for the resource monitor."""
        return self.process.pid

    async def command_calls(self) -> dict[str, int]:
        """Calls per command since start (``INFO commandstats``), ``publish`` style names."""
        stats = await self.client.info("commandstats")
        return {
            key.removeprefix("cmdstat_"): int(value["calls"])
            for key, value in stats.items()
            if key.startswith("cmdstat_")
        }


@contextlib.asynccontextmanager
async def running_redis() -> AsyncIterator[RedisServer]:
    """Run a private Redis on a free port for the duration of the block."""
    reason = redis_missing()
    if reason is not None:
        raise ServerFailed(reason)
    async with running_server(ServerCommand(ARGV), READY_TEXT) as process:
        client = Redis(host="127.0.0.1", port=process.port)
        try:
            # Connect now: the connection's own handshake commands then come
            # before any counter reading, not between two of them.
            await client.ping()
            yield RedisServer(process, client)
        finally:
            await client.aclose()

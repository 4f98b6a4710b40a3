"""The servers under test: ours and the reference peers."""

import sys
from dataclasses import dataclass

from benchmarks.dialects import Dialect
from benchmarks.server import ServerCommand


@dataclass(frozen=True)
class Target:
    """A server to benchmark and the dialect its clients speak."""

    name: str
    label: str
    command: ServerCommand
    dialect: Dialect


def ours(heartbeat: int = 30, history: bool = False, extra: tuple[str, ...] = ()) -> Target:
    """Our server with the limits that would throttle a load test turned off.

    Its SQLite file (sessions, and messages with ``history``) is fresh for
    every run rather than the user's default database.
    """
    argv = (
        *(sys.executable, "-m", "chatserver", "--host", "127.0.0.1", "--port", "{port}"),
        *("--heartbeat", str(heartbeat), "--rate-limit", "0", "--max-connections-per-ip", "0"),
        *("--history", "true" if history else "false", "--db", "{tmp}/chat.db"),
        *extra,
    )
    label = "ours, history on" if history else "ours"
    name = "ours-history" if history else "ours"
    return Target(name, label, ServerCommand(argv), Dialect.TEXT)


def peer(module: str, label: str, dialect: Dialect = Dialect.TEXT) -> Target:
    """A reference peer from :mod:`benchmarks.peers`."""
    argv = (sys.executable, "-m", f"benchmarks.peers.{module}", "--host", "127.0.0.1")
    return Target(module, label, ServerCommand((*argv, "--port", "{port}")), dialect)


SEED = peer("seed_serial", "seed (websockets, serial await send)")
BROADCAST = peer("ws_broadcast", "websockets.broadcast()")
SOCKETIO = peer("socketio_aiohttp", "python-socketio on aiohttp", Dialect.SOCKETIO)
PEERS = (SEED, BROADCAST, SOCKETIO)


def by_name(name: str) -> Target:
    """Look a target up by the name used on the command line."""
    for target in (ours(), *PEERS):
        if target.name == name:
            return target
    raise KeyError(name)

"""A private, persistent ``redis-server`` for the soak: its own port and --dir, restartable.

With ``persist`` it keeps an append-only file fsynced on every write
(``appendfsync always``), so a restart loses nothing Redis acknowledged.
Mirrors tests/conftest.py's RedisServer, but asynchronous: the soak's clients
keep running while Redis starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

from .redis_server import BINARY, redis_missing
from .server import free_port

START_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, directory: Path, *, persist: bool = True) -> None:
        self.port = free_port()
        self.directory = directory
        self.persist = persist
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start on self.port (again, after stop(): same port, same data)."""
        if (missing := redis_missing()) is not None:
            raise RuntimeError(missing)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persist
            else ["--appendonly", "no"]
        )
        self.process = await asyncio.create_subprocess_exec(
            BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(self.directory), *persistence,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.returncode is None:
            # Ours, not some other process that took the free port meanwhile.
            if (await self.cli("CONFIG", "GET", "dir")).endswith(str(self.directory)):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    async def cli(self, *args: str) -> str:
        """One command through redis-cli; its output ('' while Redis is down)."""
        process = await asyncio.create_subprocess_exec(
            "redis-cli", "-p", str(self.port), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 10)
        return out.decode().strip()

    async def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)
        self.process = None

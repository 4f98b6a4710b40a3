"""Start a server under test as a subprocess on a free port, and stop it."""

import asyncio
import collections
import contextlib
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TEXT = b"Server started on "
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServerFailed(Exception):
    """The server under test did not start, or died."""


@dataclass(frozen=True)
class ServerCommand:
    """A server to start.

    In ``argv``, ``{port}`` becomes the chosen port and ``{tmp}`` a directory
    made for this run alone (and removed after it), so no run inherits a
    database from another.
    """

    argv: tuple[str, ...]

    def for_run(self, port: int, tmp: str) -> list[str]:
        """Return the command line for one run."""
        return [arg.replace("{port}", str(port)).replace("{tmp}", tmp) for arg in self.argv]

    def shown(self) -> str:
        """The command as quoted in the results."""
        return " ".join(a.replace(sys.executable, "python") for a in self.argv)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A running server subprocess whose output is drained in the background."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, ready_text: bytes = READY_TEXT
    ) -> None:
        self.process = process
        self.port = port
        self.ready_text = ready_text
        self.tail: collections.deque[bytes] = collections.deque(maxlen=40)
        self.ready = asyncio.Event()
        # Keep reading: a full stdout pipe would block the server mid-benchmark.
        self.drainer = asyncio.create_task(self.drain())

    @property
    def pid(self) -> int:
        """Process id, for the resource monitor."""
        return self.process.pid

    async def drain(self) -> None:
        """Read the output, noting the ready line and keeping the last lines."""
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.tail.append(line)
            if self.ready_text in line:
                self.ready.set()

    async def wait_ready(self) -> None:
        """Wait for the ready line, then for the port to accept a connection."""
        waiter = asyncio.create_task(self.ready.wait())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await asyncio.wait({waiter, self.drainer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self.ready.is_set():
            raise ServerFailed(f"server exited before listening:\n{self.output()}")
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()

    def output(self) -> str:
        """The last lines the server printed."""
        return b"".join(self.tail).decode(errors="replace")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            self.drainer.cancel()
            await self.drainer


@contextlib.asynccontextmanager
async def running_server(
    command: ServerCommand, ready_text: bytes = READY_TEXT
) -> AsyncIterator[ServerProcess]:
    """Run the server on a free port for the duration of the block.

    ``ready_text`` is the line that says it listens (Redis prints its own).
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        process = await asyncio.create_subprocess_exec(
            *command.for_run(port, tmp),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        server = ServerProcess(process, port, ready_text)
        try:
            await server.wait_ready()
            yield server
        finally:
            await server.stop()

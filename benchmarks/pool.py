"""Worker processes of the load generator, and request/reply with them."""

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from benchmarks.channel import Channel
from benchmarks.commands import Acks, Shutdown
from benchmarks.server import REPO_ROOT

Reply = TypeVar("Reply")
EXIT_TIMEOUT = 10.0


class WorkerFailed(Exception):
    """A worker process died or answered out of turn."""


class WorkerHandle:
    """One worker process: acks go to a callback, other replies to a queue."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        channel: Channel,
        on_acks: Callable[[list[int]], None],
    ) -> None:
        self.process = process
        self.channel = channel
        self.on_acks = on_acks
        self.replies: asyncio.Queue[object] = asyncio.Queue()
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        """Dispatch everything the worker sends until it exits."""
        try:
            while True:
                message = await self.channel.recv()
                if isinstance(message, Acks):
                    self.on_acks(list(message.keys))
                else:
                    self.replies.put_nowait(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.replies.put_nowait(WorkerFailed("worker exited"))

    async def ask(self, command: object, reply_type: type[Reply], wait_s: float) -> Reply:
        """Send ``command`` and return the reply, which must be a ``reply_type``."""
        self.channel.send(command)
        async with asyncio.timeout(wait_s):
            reply = await self.replies.get()
        if not isinstance(reply, reply_type):
            raise WorkerFailed(f"expected {reply_type.__name__}, got {reply!r}")
        return reply

    async def close(self) -> None:
        """Ask the worker to exit, kill it if it does not."""
        with contextlib.suppress(ConnectionError):
            self.channel.send(Shutdown())
        try:
            async with asyncio.timeout(EXIT_TIMEOUT):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.channel.close()


class WorkerPool:
    """A fixed set of workers addressed together."""

    def __init__(self, workers: list[WorkerHandle]) -> None:
        self.workers = workers

    def __len__(self) -> int:
        return len(self.workers)

    async def ask_each(
        self, commands: Sequence[object], reply_type: type[Reply], wait_s: float
    ) -> list[Reply]:
        """Send ``commands[i]`` to worker ``i``, all at once; return the replies."""
        return list(
            await asyncio.gather(
                *(w.ask(c, reply_type, wait_s) for w, c in zip(self.workers, commands, strict=True))
            )
        )

    async def ask_all(self, command: object, reply_type: type[Reply], wait_s: float) -> list[Reply]:
        """Send the same command to every worker; return the replies."""
        return await self.ask_each([command] * len(self.workers), reply_type, wait_s)


async def start_worker(on_acks: Callable[[list[int]], None]) -> WorkerHandle:
    """Start one worker process connected by a socketpair."""
    ours, theirs = socket.socketpair()
    with theirs:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.worker",
            "--fd",
            str(theirs.fileno()),
            pass_fds=(theirs.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            cwd=REPO_ROOT,
        )
    return WorkerHandle(process, await Channel.open(ours), on_acks)


@contextlib.asynccontextmanager
async def worker_pool(
    count: int, on_acks: Callable[[list[int]], None]
) -> AsyncIterator[WorkerPool]:
    """Run ``count`` workers for the duration of the block."""
    workers: list[WorkerHandle] = []
    try:
        for _ in range(count):
            workers.append(await start_worker(on_acks))
        yield WorkerPool(workers)
    finally:
        await asyncio.gather(*(w.close() for w in workers))

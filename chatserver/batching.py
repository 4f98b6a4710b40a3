"""One task that writes what was queued, in order, a batch at a time.

Whatever arrives while a batch is being written waits and goes out together
in the next one (group commit): the cost per item stays small under load.
The room log, the session writer and the Redis link each own one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Queue items; ``write`` gets them in order, in batches, from one task."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], name: str) -> None:
        self.write = write
        self.name = name
        self.queue: list[T] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def add(self, item: T) -> None:
        self.queue.append(item)
        self._idle.clear()
        self._wake.set()

    def __len__(self) -> int:
        return len(self.queue)

    async def flush(self) -> None:
        """Wait until everything queued so far was written (or failed)."""
        if self._task is not None and not self._task.done():
            await self._idle.wait()

    async def close(self) -> None:
        """Write what is queued, then stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                batch, self.queue = self.queue, []
                await self.write(batch)
            self._idle.set()

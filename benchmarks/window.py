"""Closed-loop publishing: never more than W messages not yet delivered to all.

A message counts as delivered when every worker has acked it, that is when
every healthy receiver has read it. Keeping the window bounded means a
server cannot look fast by queueing: throughput is what it delivers.
"""

import asyncio
import time
from collections.abc import Callable

from picows import WSMsgType

from benchmarks.client import MAX_SENDERS, RING_BITS, Endpoint
from benchmarks.dialects import Dialect, frame_for
from benchmarks.payload import make_payload

PROBE_INTERVAL = 0.5


class Window:
    """Publishes from the sender connections, refilling as acks arrive."""

    def __init__(
        self, senders: list[Endpoint], dialect: Dialect, workers: int, size: int, payload: int
    ) -> None:
        if not 0 < len(senders) <= MAX_SENDERS:
            raise ValueError(f"1 to {MAX_SENDERS} senders")
        if not 0 < size < 1 << RING_BITS:
            raise ValueError(f"window must be 1 to {(1 << RING_BITS) - 1}")
        self.senders = senders
        self.dialect = dialect
        self.workers = workers
        self.size = size
        self.payload = payload
        self.pending: dict[int, int] = {}  # message key -> workers that acked it
        self.next_seq = [0] * len(senders)
        self.turn = 0
        self.open = False
        self.limit: int | None = None
        self.sent = 0
        self.completed = 0
        self.last_done = 0.0
        self.changed = asyncio.Event()

    def publish(self, sender: int) -> int:
        """Send the next message of ``sender``; return its key."""
        seq = self.next_seq[sender]
        self.next_seq[sender] = seq + 1
        key = (sender << 32) | seq
        self.pending[key] = 0
        transport = self.senders[sender].transport
        assert transport is not None
        payload = make_payload(sender, seq, time.monotonic_ns(), self.payload)
        transport.send(WSMsgType.TEXT, frame_for(self.dialect, payload))
        self.sent += 1
        return key

    def fill(self) -> None:
        """Publish until the window is full, the phase closed or the limit reached."""
        while self.open and len(self.pending) < self.size:
            if self.limit is not None and self.sent >= self.limit:
                self.open = False
                return
            self.publish(self.turn)
            self.turn = (self.turn + 1) % len(self.senders)

    def on_acks(self, keys: list[int]) -> None:
        """Count acks of one worker; a message acked by all is delivered."""
        for key in keys:
            acked = self.pending.get(key)
            if acked is None:
                continue  # a warm-up probe we stopped waiting for
            if acked + 1 < self.workers:
                self.pending[key] = acked + 1
                continue
            del self.pending[key]
            self.completed += 1
        self.last_done = time.monotonic()
        self.fill()
        self.changed.set()

    async def wait_until(self, done: Callable[[], bool], wait_s: float) -> bool:
        """Wait up to ``wait_s`` seconds for ``done()``; return whether it held."""
        try:
            async with asyncio.timeout(wait_s):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return done()
        return True

    async def warm_up(self, wait_s: float) -> bool:
        """Probe until one message reaches every receiver, then settle.

        A receiver the server has not registered yet misses a probe, so probe
        again until one arrives everywhere; one more probe then flushes every
        earlier one, because each connection receives in order.
        """
        deadline = time.monotonic() + wait_s
        while self.completed == 0 and time.monotonic() < deadline:
            self.publish(0)
            await self.wait_until(lambda: self.completed > 0, PROBE_INTERVAL)
        if self.completed == 0:
            return False
        last = self.publish(0)
        settled = await self.wait_until(
            lambda: last not in self.pending, deadline - time.monotonic()
        )
        self.pending.clear()
        self.sent = self.completed = 0
        return settled

    async def run(self, duration: float, limit: int | None) -> None:
        """Publish for ``duration`` seconds or until ``limit`` messages are delivered."""
        self.limit = limit
        self.open = True
        self.fill()
        if limit is None:
            await asyncio.sleep(duration)
        else:
            await self.wait_until(lambda: self.completed >= limit, duration)
        self.open = False

    async def drain(self, wait_s: float) -> bool:
        """Wait for the messages in flight; return whether all were delivered."""
        return await self.wait_until(lambda: not self.pending, wait_s)

"""The broker in Redis: pub/sub for events and control, and in-order delivery
of the room log's publications with gaps filled from the streams.

One subscriber connection per node listens on four channels: messages (from
the append script), events (presence, nicks, announcements), control for all
nodes, and control for this node. A probe published to this node's own
channel every second proves the subscription still receives; when it does
not (Centrifugo issue 1189: a connection that looks healthy but is not), or
the connection drops, the node resubscribes with jittered backoff and then
catches up every room it is tracking, so no member misses a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

import msgspec
from redis.exceptions import RedisError

from .broker import AnyControl, Deliver, OnControl
from .errors import Unavailable
from .protocol import (
    DeleteEvent,
    Event,
    JoinEvent,
    LeaveEvent,
    MessageEvent,
    NickEvent,
    SystemEvent,
)
from .redis_link import RedisLink
from .redis_roomlog import parse_publication

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 3.5  # seconds without anything received, probes included
BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0
FILL_LIMIT = 10_000  # messages fetched per gap fill
FILL_TRIES = 8

BrokerEvent = JoinEvent | LeaveEvent | NickEvent | SystemEvent | DeleteEvent
_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(BrokerEvent).decode
_decode_control = msgspec.json.Decoder(AnyControl).decode
PROBE = b"probe"

Fetch = Callable[[str, int, int], Awaitable[list[MessageEvent]]]


class _Stale(Exception):
    """The subscription received nothing, not even our own probe."""


class RoomSequence:
    """Delivery state of one room on this node: the epoch and the newest id
    delivered, and what arrived early while a gap is being filled."""

    __slots__ = ("early", "epoch", "filling", "last")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch = epoch
        self.last = last
        self.early: dict[int, MessageEvent] = {}
        self.filling = False


class RedisBroker:
    """Cross-node events and control over Redis pub/sub."""

    def __init__(self, link: RedisLink, node: str, fetch: Fetch) -> None:
        self.link = link
        self.node = node
        self.fetch = fetch
        self.rooms: dict[str, RoomSequence] = {}
        self._deliver: Deliver = _nowhere
        self._on_control: OnControl = _nowhere
        self._events = link.key("events")
        self._control_all = link.key("control")
        self._messages = link.key("messages")
        self._messages_b, self._events_b = self._messages.encode(), self._events.encode()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._fills: set[asyncio.Task[None]] = set()

    def subscribe(self, deliver: Deliver, on_control: OnControl) -> None:
        self._deliver, self._on_control = deliver, on_control

    def node_channel(self, node: str) -> str:
        return self.link.key("node", node)

    # ------------------------------------------------------------------ sending

    def publish(self, event: Event) -> None:
        data = _encode(event)
        self.link.later("publish", lambda pipe: pipe.publish(self._events, data))

    def control(self, command: AnyControl, node: str | None = None) -> None:
        channel = self._control_all if node is None else self.node_channel(node)
        data = _encode(command)
        self.link.later("control", lambda pipe: pipe.publish(channel, data))

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="chat-redis-subscriber")
        # Wait (bounded) for the first subscription, so events published right
        # after start-up are not missed; without Redis the node starts anyway.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._ready.wait()

    async def close(self) -> None:
        for task in [self._task, *self._fills]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------------ receiving

    async def _listen(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._subscribed()
            except (RedisError, OSError, _Stale) as exc:
                self.link.subscribed = False
                self.link.failed("subscription", exc)
            self._ready.set()  # start-up waits only for the first attempt
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _subscribed(self) -> None:
        channels = (self._messages, self._events, self._control_all, self.node_channel(self.node))
        async with self.link.subscription(channels, self._dispatch) as subscription:
            self._ready.set()
            self.link.subscribed = True
            self.link.health.up("broker")
            log.info("subscribed to Redis as node %s", self.node)
            self._catch_up()
            while True:
                self.link.later("probe", self._probe)
                # Publications are handled as they arrive (``_dispatch``); this
                # task only probes, and notices a drop or a silence.
                done, _ = await asyncio.wait([subscription.lost], timeout=PROBE_INTERVAL)
                if done:
                    subscription.lost.result()  # raises why it was lost
                silent = time.monotonic() - subscription.last_heard
                if silent > PROBE_TIMEOUT:
                    raise _Stale(f"nothing received for {PROBE_TIMEOUT} s")

    def _probe(self, pipe: object) -> None:
        pipe.publish(self.node_channel(self.node), PROBE)  # type: ignore[attr-defined]

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == self._messages_b:
                self._on_message(data)
            elif channel == self._events_b:
                self._deliver(_decode_event(data))
            elif data != PROBE:
                self._on_control(_decode_control(data))
        except (ValueError, msgspec.DecodeError):
            log.warning("ignoring a malformed publication on %r", channel)
        except Exception:
            log.exception("handling a publication on %r failed", channel)

    # ------------------------------------------------------------------ ordering

    def _on_message(self, data: bytes) -> None:
        msg_id, epoch, message = parse_publication(data)
        seq = self.rooms.get(message.room)
        if seq is None:
            # The first message of a room this node was not tracking.
            seq = self.rooms[message.room] = RoomSequence(epoch, msg_id - 1)
        elif seq.epoch != epoch:
            # The log lost its data: the new epoch counts from 1 again.
            seq = self.rooms[message.room] = RoomSequence(epoch, 0)
        if msg_id <= seq.last:
            return  # a duplicate (a fill already delivered it)
        if msg_id == seq.last + 1 and not seq.filling:
            seq.last = msg_id
            self._deliver(message)
            return
        seq.early[msg_id] = message
        if not seq.filling:
            self._start_fill(message.room, seq)

    def _start_fill(self, room: str, seq: RoomSequence) -> None:
        seq.filling = True
        task = asyncio.create_task(self._fill(room, seq), name=f"chat-fill-{room}")
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _fill(self, room: str, seq: RoomSequence) -> None:
        """Deliver the ids missing before what arrived early, from the stream."""
        try:
            while True:
                missing = await self._fetch_patiently(room, seq.last)
                for message in missing:
                    seq.early.setdefault(message.id, message)
                self._release(seq)
                if not seq.early:
                    return
                if len(missing) < FILL_LIMIT:
                    # The stream has nothing more before them (retention trimmed
                    # it): skip the hole rather than stall the room.
                    seq.last = min(seq.early) - 1
                    self._release(seq)
                    if not seq.early:
                        return
        except Unavailable:
            log.warning("could not fill a gap in #%s; the next message retries", room)
        finally:
            seq.filling = False

    async def _fetch_patiently(self, room: str, last: int) -> list[MessageEvent]:
        """The stream after ``last``; a Redis that is coming back gets a few tries."""
        delay = BACKOFF_FIRST
        for _ in range(FILL_TRIES - 1):
            with contextlib.suppress(Unavailable):
                return await self.fetch(room, last, FILL_LIMIT)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_CAP)
        return await self.fetch(room, last, FILL_LIMIT)

    def _release(self, seq: RoomSequence) -> None:
        while seq.last + 1 in seq.early:
            seq.last += 1
            self._deliver(seq.early.pop(seq.last))
        for stale in [msg_id for msg_id in seq.early if msg_id <= seq.last]:
            del seq.early[stale]

    def _catch_up(self) -> None:
        """After (re)subscribing: fetch what every tracked room missed meanwhile."""
        for room, seq in self.rooms.items():
            if not seq.filling:
                self._start_fill(room, seq)

    def track(self, room: str, epoch: str, last: int) -> None:
        """Start tracking ``room`` at ``last`` (a local member joined it), so a
        message missed before the next one arrives is still filled."""
        if room not in self.rooms and epoch:
            self.rooms[room] = RoomSequence(epoch, last)


def _nowhere(item: object) -> None:
    """Before ``subscribe``: nothing listens yet."""

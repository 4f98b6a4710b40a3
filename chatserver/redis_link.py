"""The connection to Redis shared by every Redis-backed part of one node.

Commands go through one client (a pool; redis-py retries a command that
failed on a dropped connection, which is why appends carry idempotency keys).
Writes that nobody awaits (presence, publications) go through :meth:`later`,
which sends them in order, pipelined, from one task. Every failure is turned
into :class:`~chatserver.errors.Unavailable` (component ``broker``) and
recorded in :class:`~chatserver.health.Health`, so no handler waits on a
Redis that is gone for longer than the socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.client import Pipeline
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from .batching import Batcher
from .errors import Unavailable
from .health import Health
from .redis_subscriber import OnPublication, SubscriberProtocol, subscribe

log = logging.getLogger(__name__)

COMPONENT = "broker"
SOCKET_TIMEOUT = 2.0  # seconds: a command never waits longer on a dead Redis
RETRIES = 2
POOL_SIZE = 32  # connections to Redis per node for awaited commands
MAX_LATER = 100_000  # queued background writes before new ones are dropped

Queued = Callable[[Pipeline], object]


class _Later:
    """One queued write: what queues its commands, and who waits for their results."""

    __slots__ = ("done", "queue", "what")

    def __init__(self, what: str, queue: Queued, done: asyncio.Future[list[Any]] | None) -> None:
        self.what = what
        self.queue = queue
        self.done = done


class RedisLink:
    """One node's Redis client, scripts and ordered background writer."""

    def __init__(self, url: str, prefix: str, health: Health) -> None:
        self.url = url
        self.prefix = prefix
        self.health = health
        retry = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), RETRIES)
        # Bounded, and waiting for a free connection rather than failing: a
        # connect storm of a thousand clients otherwise opens a thousand Redis
        # connections and gets "Too many connections" for most of them.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=SOCKET_TIMEOUT * 2,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=retry,
            health_check_interval=10,
        )
        self.redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self.scripts: dict[str, AsyncScript] = {
            name: self.redis.register_script(_lua(name))
            for name in (
                "append",
                "claim_name",
                "release_name",
                "refresh_name",
                "create_account",
                "login_attempt",
                "login_ok",
            )
        }
        self.subscribed = False  # the broker's subscriber says whether it listens
        self._batcher: Batcher[_Later] = Batcher(self._send, "chat-redis-writer")

    def key(self, *parts: str | int) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def room_key(self, room: str, part: str) -> str:
        """A per-room key; the ``{room}`` hash tag keeps a room's keys in one
        Redis Cluster slot, as its Lua script needs."""
        return f"{self.prefix}:{{{room}}}:{part}"

    async def open(self) -> None:
        self._batcher.start()

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SOCKET_TIMEOUT * 2):
                await self._batcher.close()
        await self.redis.aclose(close_connection_pool=True)  # a pool we made is ours to close

    # ------------------------------------------------------------------ commands

    async def call(self, what: str, command: Awaitable[Any]) -> Any:
        """Await one Redis command; a failure becomes Unavailable (and is recorded).

        Typed ``Any``: Redis answers are dynamic (bytes, ints, lists), and each
        caller knows what its command returns."""
        try:
            result = await command
        except (RedisError, OSError) as exc:
            _still_cancelled()
            self.failed(what, exc)
            raise Unavailable(COMPONENT, "the chat backend (Redis) is unavailable") from None
        _still_cancelled()
        if COMPONENT in self.health.outages and self.subscribed:
            self.health.up(COMPONENT)  # commands work again, and so does pub/sub
        return result

    async def pipeline(self, what: str, build: Callable[[Pipeline], object]) -> list[Any]:
        """Run the commands ``build`` queues on a pipeline, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            await _queue(build, pipe)
            result: list[Any] = await self.call(what, pipe.execute())
            return result

    def failed(self, what: str, exc: BaseException) -> None:
        self.health.down(COMPONENT, f"Redis: {what} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ background

    def later(self, what: str, queue: Queued) -> None:
        """Send the commands ``queue`` adds to a pipeline soon, after those before."""
        if len(self._batcher) >= MAX_LATER:
            self.health.down(COMPONENT, "Redis: background writes are backing up")
            return
        self._enqueue(_Later(what, queue, None))

    async def in_order(self, what: str, queue: Queued) -> list[Any]:
        """Like :meth:`later`, but wait for the results of the commands ``queue``
        adds: what a node sends keeps its order (a user's join before their
        first message), and concurrent callers share one round trip."""
        return await self.submit(what, queue)

    def submit(self, what: str, queue: Queued) -> asyncio.Future[list[Any]]:
        """:meth:`in_order` without waiting: the future of the results."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Later(what, queue, done))
        return done

    def _enqueue(self, item: _Later) -> None:
        self._batcher.add(item)

    async def flush(self) -> None:
        """Wait until the background writes queued so far were sent (or failed)."""
        await self._batcher.flush()

    def evalsha(
        self, pipe: Pipeline, name: str, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> None:
        """Queue script ``name`` on ``pipe`` by its SHA alone.

        redis-py's script objects make every pipeline that holds one ask
        ``SCRIPT EXISTS`` first: a second round trip for each batch of appends.
        A Redis that lost its scripts (restarted, ``SCRIPT FLUSH``) answers
        NOSCRIPT instead; ``_send`` then loads them and runs those items again,
        which is safe since they did not run."""
        pipe.evalsha(self.scripts[name].sha, len(keys), *keys, *args)

    async def _send(self, batch: list[_Later]) -> None:
        try:
            outcomes = await self._execute(batch)
            again = [i for i, results in enumerate(outcomes) if _no_script(results)]
            if again:
                for script in self.scripts.values():
                    await self.redis.script_load(script.script)
                retried = await self._execute([batch[i] for i in again])
                for i, results in zip(again, retried, strict=True):
                    outcomes[i] = results
        except (RedisError, OSError) as exc:
            # Presence and publications are refreshed or re-derived later
            # (presence by the next refresh, messages through their ids);
            # whoever waits is told.
            self.failed(f"{len(batch)} writes ({batch[0].what}, ...)", exc)
            error = Unavailable(COMPONENT, "the chat backend (Redis) is unavailable")
            for item in batch:
                if item.done is not None and not item.done.done():
                    item.done.set_exception(error)
            return
        for item, results in zip(batch, outcomes, strict=True):
            if item.done is not None and not item.done.done():
                self._settle(item, results)

    async def _execute(self, batch: list[_Later]) -> list[list[Any]]:
        """One pipeline of every item's commands; each item's results, errors included."""
        spans: list[tuple[int, int]] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in batch:
                start = len(pipe.command_stack)
                await _queue(item.queue, pipe)
                spans.append((start, len(pipe.command_stack)))
            results = await pipe.execute(raise_on_error=False)
        _still_cancelled()
        return [results[start:end] for start, end in spans]

    def _settle(self, item: _Later, results: list[Any]) -> None:
        assert item.done is not None
        failure = next((r for r in results if isinstance(r, Exception)), None)
        if failure is None:
            if COMPONENT in self.health.outages and self.subscribed:
                self.health.up(COMPONENT)
            item.done.set_result(results)
            return
        self.failed(item.what, failure)
        item.done.set_exception(Unavailable(COMPONENT, "the chat backend (Redis) failed"))

    @contextlib.asynccontextmanager
    async def subscription(
        self, channels: Sequence[str], on_publication: OnPublication
    ) -> AsyncIterator[SubscriberProtocol]:
        """This node's own pub/sub connection (see ``redis_subscriber.py``); it
        does not reconnect behind our back, so the broker sees every drop and
        catches up after it."""
        async with asyncio.timeout(SOCKET_TIMEOUT):
            protocol = await subscribe(self.url, channels, on_publication)
        try:
            yield protocol
        finally:
            protocol.close()


async def _queue(build: Callable[[Pipeline], object], pipe: Pipeline) -> None:
    """Let ``build`` queue its commands; a script call queues when awaited."""
    result = build(pipe)
    if inspect.isawaitable(result):
        await result


def _still_cancelled() -> None:
    """Raise CancelledError if this task was cancelled during a command.

    redis-py turns a cancellation that lands while it connects into a
    ConnectionError, which its retry then retries: the command succeeds and the
    cancellation is gone, so a task being stopped (at shutdown) ran on forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _no_script(results: list[Any]) -> bool:
    return any(isinstance(result, NoScriptError) for result in results)


def _lua(name: str) -> str:
    return resources.files("chatserver").joinpath(f"lua/{name}.lua").read_text("utf-8")

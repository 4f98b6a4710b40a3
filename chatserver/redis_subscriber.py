"""This node's pub/sub connection to Redis: publications handed over as their
bytes arrive.

Every node receives every message of every room, so what the subscription
costs per publication is paid by every node for every message, however few
of its own clients are in the room. redis-py's asyncio ``PubSub`` costs a
coroutine call, a timeout context and a parse per publication, and a task
wake-up per read (py-spy on scenario 7, two nodes: about 8 % of a node's
samples outside the deliveries themselves). This protocol feeds each chunk
read from the socket to hiredis (Redis's own C parser) and hands every
complete publication to the broker in the same callback, so a burst of
messages is delivered, and written to the clients, in one loop iteration.

Commands still go through redis-py (``redis_link.py``); only the
subscription, which needs nothing but SUBSCRIBE, is spoken here. The URL is
read by redis-py's own ``parse_url``, so both connections reach the same
server with the same credentials (TCP, TLS with ``rediss://``, or a Unix
socket).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

OnPublication = Callable[[bytes, bytes], None]  # channel, data


class SubscriberProtocol(asyncio.Protocol):
    """Replies to our few commands go to their waiters, in order; publications
    go to ``on_publication`` as soon as they are complete."""

    def __init__(self, on_publication: OnPublication) -> None:
        self.on_publication = on_publication
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_heard = time.monotonic()
        self._reader = hiredis.Reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                self._handle(reply)
        except hiredis.ProtocolError as exc:
            self._fail(RedisConnectionError(f"Redis sent something unreadable: {exc}"))

    def _handle(self, reply: Any) -> None:
        if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
            self.on_publication(reply[1], reply[2])
        elif self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if isinstance(reply, hiredis.ReplyError):
                    waiter.set_exception(ResponseError(str(reply)))
                else:
                    waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = RedisConnectionError(f"Redis closed the subscription: {exc or 'end of stream'}")
        if not self.lost.done():
            self.lost.set_exception(error)
            self.lost.exception()  # retrieved: nobody need await a loss after close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    def _fail(self, error: Exception) -> None:
        self.close()
        if not self.lost.done():
            self.lost.set_exception(error)
            self.lost.exception()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def command(self, *parts: str | bytes, replies: int = 1) -> list[asyncio.Future[Any]]:
        """Send one command; the futures of the ``replies`` it gets (SUBSCRIBE
        answers once per channel)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in range(replies)]
        self._waiters.extend(waiters)
        self.transport.write(pack(parts))
        return waiters


def pack(parts: Sequence[str | bytes]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def subscribe(
    url: str, channels: Sequence[str], on_publication: OnPublication
) -> SubscriberProtocol:
    """Connect, authenticate and subscribe to ``channels`` (the caller bounds the time)."""
    options: dict[str, Any] = dict(parse_url(url))
    loop = asyncio.get_running_loop()

    def factory() -> SubscriberProtocol:
        return SubscriberProtocol(on_publication)

    connection_class = options.get("connection_class")
    if connection_class is UnixDomainSocketConnection:
        _, protocol = await loop.create_unix_connection(factory, str(options["path"]))
    else:
        host, port = str(options.get("host", "localhost")), int(options.get("port", 6379))
        tls = _tls_context(options) if connection_class is SSLConnection else None
        _, protocol = await loop.create_connection(factory, host, port, ssl=tls)
    try:
        await _handshake(protocol, options, channels)
    except BaseException:
        protocol.close()  # also when the caller's time ran out meanwhile
        raise
    return protocol


async def _handshake(
    protocol: SubscriberProtocol, options: dict[str, Any], channels: Sequence[str]
) -> None:
    password = options.get("password")
    if password:
        username = options.get("username")
        auth = ("AUTH", username, password) if username else ("AUTH", password)
        await asyncio.gather(*protocol.command(*auth))
    # Pub/sub channels are not per database, so SELECT is not needed.
    await asyncio.gather(*protocol.command("SUBSCRIBE", *channels, replies=len(channels)))


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

"""Accept-level limits: what a TCP connection may cost before it is a request.

aiohttp starts counting a peer only once its request is parsed, and keeps a
connection that sends nothing, or half a request, open for ever. Here every
accepted connection is wrapped before aiohttp sees it:

* it must finish its first request head within ``request_timeout`` seconds,
  or it is closed;
* ``max_connections_per_ip`` counts it from accept (the TCP peer; behind a
  ``--trusted-proxy`` the upgrade-time check by forwarded address does this);
* past ``max_connections`` in total it gets ``503`` and is closed, except that
  a few ``GET /healthz`` requests are still let through, so a health check
  keeps answering at the cap.

The wrapper forwards every protocol call to aiohttp's request handler, so
after admission the connection is aiohttp's as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections import Counter
from collections.abc import Callable
from typing import Final, cast

from aiohttp import web

from .framecheck import UNMASKED_CLOSE, MaskCheck
from .settings import Settings

log = logging.getLogger(__name__)

# File descriptors kept free of connections: the database, the log, the
# executor, the event loop's own, and the over-cap connections waiting to be
# told 503.
FD_HEADROOM: Final = 64
OVER_CAP_PENDING: Final = 32  # over-cap connections read for a /healthz request line
HEALTH_RESERVE: Final = 8  # /healthz connections allowed past the cap
OVER_CAP_WAIT: Final = 1.0  # seconds an over-cap connection gets to send its request line
HEAD_END: Final = b"\r\n\r\n"
MAX_HEAD_KEPT: Final = 16 * 1024  # enough of a head to find its Upgrade header
HEALTH_LINE: Final = b"GET /healthz "


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connection_cap(settings: Settings) -> int:
    """The total connection cap: the setting, or (``-1``) the open-file limit less headroom."""
    if settings.max_connections >= 0:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft - FD_HEADROOM - soft // 10, 16)


def _response(status: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


BUSY: Final = _response("503 Service Unavailable", "server at its connection limit\n")
TOO_MANY: Final = _response("429 Too Many Requests", "too many connections from your address\n")


class Admission:
    """Counts live connections in total and per peer address."""

    def __init__(self, settings: Settings) -> None:
        self.cap = connection_cap(settings)
        self.per_address = 0 if settings.trusted_proxy else settings.max_connections_per_ip
        self.request_timeout = settings.request_timeout
        self.total = 0
        self.over_cap = 0  # connections past the cap, being read or let through to /healthz
        self.by_address: Counter[str] = Counter()
        self.refused = 0

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: Guarded(self, factory)

    def acquire(self, address: str) -> bool:
        if self.per_address and self.by_address[address] >= self.per_address:
            return False
        self.by_address[address] += 1
        self.total += 1
        return True

    def release(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


class Guarded(asyncio.Protocol):
    """One accepted connection: admitted, timed, then handed to aiohttp."""

    __slots__ = (
        "_address",
        "_admission",
        "_buffer",
        "_counted",
        "_factory",
        "_frames",
        "_head",
        "_inner",
        "_over_cap",
        "_timer",
        "_transport",
        "_watching",
    )

    def __init__(self, admission: Admission, factory: Callable[[], asyncio.Protocol]) -> None:
        self._admission = admission
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = b""  # the tail seen so far, to find the end of the head
        self._watching = True
        self._over_cap = False
        self._counted = False
        self._head = b""  # the first request head, to see whether it asks for an upgrade
        self._frames: MaskCheck | None = None  # set once a WebSocket upgrade was asked for

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else "unknown"
        admission = self._admission
        if not admission.acquire(self._address):
            self._refuse(TOO_MANY)
            return
        self._counted = True
        loop = asyncio.get_running_loop()
        if admission.cap and admission.total > admission.cap:
            if admission.over_cap >= OVER_CAP_PENDING:
                self._refuse(BUSY)
                return
            # Past the cap: wait briefly for the request line, for /healthz.
            self._over_cap = True
            admission.over_cap += 1
            self._timer = loop.call_later(OVER_CAP_WAIT, self._refuse, BUSY)
            return
        self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._transport is not None
        if self._admission.request_timeout:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_later(self._admission.request_timeout, self._expire)
        self._inner = self._factory()
        self._inner.connection_made(self._transport)

    def _refuse(self, answer: bytes) -> None:
        self._admission.refused += 1
        self._watching = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)
            self._transport.close()

    def _expire(self) -> None:
        self._timer = None
        if self._watching and self._transport is not None:
            log.debug("closing %s: no complete request within the timeout", self._address)
            self._watching = False
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            self._over_cap_data(data)
            return
        if self._frames is not None and not self._frames.feed(data):
            self._refuse_unmasked()
            return
        if self._watching:
            self._watch_head(data)
        self._inner.data_received(data)

    def _watch_head(self, data: bytes) -> None:
        seen = self._buffer + data
        if len(self._head) < MAX_HEAD_KEPT:
            self._head += data[: MAX_HEAD_KEPT - len(self._head)]
        if HEAD_END not in seen:
            self._buffer = seen[-3:]
            return
        self._watching = False
        self._buffer = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        head = self._head.partition(HEAD_END)[0]
        self._head = b""
        if b"upgrade: websocket" in head.lower():
            self._frames = MaskCheck()
            # Frames that came in the same chunk as the end of the head.
            tail = seen[seen.find(HEAD_END) + len(HEAD_END) :]
            if tail and not self._frames.feed(tail):
                self._refuse_unmasked()

    def _refuse_unmasked(self) -> None:
        """Close 1002 (RFC 6455 5.1), stop reading, hang up shortly after."""
        self._frames = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(UNMASKED_CLOSE)
        transport.pause_reading()
        asyncio.get_running_loop().call_later(0.5, transport.abort)

    def _over_cap_data(self, data: bytes) -> None:
        if not self._watching:
            return
        self._buffer += data
        if len(self._buffer) < len(HEALTH_LINE) and HEALTH_LINE.startswith(self._buffer):
            return
        if self._buffer.startswith(HEALTH_LINE) and self._admission.over_cap <= HEALTH_RESERVE:
            buffered, self._buffer = self._buffer, b""
            self._start(asyncio.get_running_loop())
            self.data_received(buffered)
            return
        self._refuse(BUSY)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._over_cap:
            self._admission.over_cap -= 1
        if self._counted:
            self._counted = False
            self._admission.release(self._address)
        if self._inner is not None:
            self._inner.connection_lost(exc)


class AdmittingSite(web.TCPSite):
    """A TCPSite whose connections pass through :class:`Admission` first."""

    def __init__(self, runner: web.BaseRunner, admission: Admission, host: str, port: int) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.admission = admission

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.admission.wrap(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]

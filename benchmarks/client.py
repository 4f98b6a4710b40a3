"""picows listeners that count benchmark frames, and a paced connector.

The receive path is the hot loop of the whole load generator: one
``bytes.find`` and three ``int()`` slices per frame, no other parsing.
"""

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from picows import WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.url import WSParsedURL

from benchmarks.dialects import (
    ENGINEIO_PONG,
    SOCKETIO_CONNECT,
    Dialect,
    Reply,
    classify,
)
from benchmarks.histogram import FAST_LIMIT, Histogram
from benchmarks.payload import FIELDS_END, MARK, SENDER_AT, SEQ_AT, TIME_AT

RING_BITS = 12  # per-sender ring of window counters: the window must stay below 4096
RING_MASK = (1 << RING_BITS) - 1
MAX_SENDERS = 64
NO_STATUS = 1005  # RFC 6455: close frame without a code
ACK_DELAY = 0.001
RESUME_RCVBUF = 1 << 18


class Hub:
    """State shared by the receivers of one process."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.latency_us = Histogram()
        self.latency_us.enable_fast()
        self.counting = False
        self.track_window = False
        self.need = 0  # healthy receivers that must see a message before it is acked
        self.counters = [0] * (MAX_SENDERS << RING_BITS)
        self.pending_acks: list[int] = []
        self.on_acks: Callable[[list[int]], None] | None = None
        self.frames = 0
        self.ready = 0
        self.expected_ready = 0
        self.all_ready = asyncio.Event()
        self.disconnected = 0

    def reset(self) -> None:
        """Zero the statistics and window counters at the start of a phase."""
        self.latency_us = Histogram()
        self.latency_us.enable_fast()
        self.counters = [0] * (MAX_SENDERS << RING_BITS)
        self.disconnected = 0

    def count_delivery(self, sender: int, seq: int) -> None:
        """Count one delivery towards the window; ack when all local receivers have it."""
        key = (sender << RING_BITS) | (seq & RING_MASK)
        count = self.counters[key] + 1
        if count < self.need:
            self.counters[key] = count
            return
        self.counters[key] = 0
        if not self.pending_acks:
            # Batch acks for a millisecond: one pipe write per message would
            # cost the receivers more than the frames themselves.
            asyncio.get_running_loop().call_later(ACK_DELAY, self.flush_acks)
        self.pending_acks.append((sender << 32) | seq)

    def flush_acks(self) -> None:
        """Hand the batched acks to whoever tracks the window."""
        acks, self.pending_acks = self.pending_acks, []
        if self.on_acks is not None and acks:
            self.on_acks(acks)

    def mark_ready(self) -> None:
        """Count one client the server has registered."""
        self.ready += 1
        if self.ready >= self.expected_ready:
            self.all_ready.set()


class Endpoint(WSListener):
    """A client connection: answers handshake chatter, records the close code."""

    def __init__(self, hub: Hub, index: int) -> None:
        super().__init__()
        self.hub = hub
        self.index = index
        self.transport: WSTransport | None = None
        self.is_ready = False
        self.close_code: int | None = None
        self.closed = asyncio.Event()

    def on_ws_connected(self, transport: WSTransport) -> None:
        """Keep the transport to send on and pause later."""
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Note the loss of a connection."""
        self.hub.disconnected += 1
        self.closed.set()

    def on_control(self, transport: WSTransport, frame: WSFrame) -> None:
        """Handle a non-text frame: answer a close and keep its code."""
        if frame.msg_type == WSMsgType.CLOSE:
            payload = frame.get_payload_as_bytes()
            # Parsed by hand: picows' close code enum has no member for 4000.
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
            transport.send_close()
            transport.disconnect()

    def on_other(self, transport: WSTransport, data: bytes) -> None:
        """Handle a text frame without a benchmark payload."""
        reply = classify(self.hub.dialect, data, self.is_ready)
        if reply is Reply.SEND_PONG:
            transport.send(WSMsgType.TEXT, ENGINEIO_PONG)
        elif reply is Reply.SEND_NAMESPACE_CONNECT:
            transport.send(WSMsgType.TEXT, SOCKETIO_CONNECT)
        elif reply is Reply.READY and not self.is_ready:
            self.is_ready = True
            self.hub.mark_ready()
            self.on_ready()

    def on_ready(self) -> None:
        """Hook: the server has registered this client."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Senders ignore the broadcast they get back."""
        data = frame.get_payload_as_bytes()
        if data.find(MARK) < 0:
            self.on_unmarked(transport, frame, data)

    def on_unmarked(self, transport: WSTransport, frame: WSFrame, data: bytes) -> None:
        """Handle a frame without a benchmark payload: control or chatter."""
        self.hub.frames += 1
        if frame.msg_type == WSMsgType.TEXT:
            self.on_other(transport, data)
        else:
            self.on_control(transport, frame)


class Receiver(Endpoint):
    """A client whose every benchmark frame is timed and checked for order."""

    def __init__(self, hub: Hub, index: int, own_sender: int = -1, slow: bool = False) -> None:
        super().__init__(hub, index)
        self.own_sender = own_sender  # frames from ourselves (an echo) are not deliveries
        self.slow = slow
        self.paused = False
        self.last_seq: dict[int, int] = {}
        self.received = 0
        self.reordered = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Time, order-check and window-count one frame."""
        # The payload before the type: reading frame.msg_type builds a Python
        # enum each time, which costs more than the find. Pings never get
        # here (picows answers them) and close payloads carry no marker.
        data = frame.get_payload_as_bytes()
        at = data.find(MARK)
        if at < 0:
            self.on_unmarked(transport, frame, data)
            return
        if self.paused:
            return  # a slow client's backlog is not a delivery to measure
        sender = int(data[at + SENDER_AT : at + SEQ_AT])
        if sender == self.own_sender:
            return
        seq = int(data[at + SEQ_AT : at + TIME_AT])
        hub = self.hub
        if hub.track_window:
            hub.count_delivery(sender, seq)
        if not hub.counting:
            return
        latency = (time.monotonic_ns() - int(data[at + TIME_AT : at + FIELDS_END])) // 1000
        if 0 <= latency < FAST_LIMIT:
            hub.latency_us.fast[latency] += 1
        else:
            hub.latency_us.add(latency)
        if seq > self.last_seq.get(sender, -1):
            self.last_seq[sender] = seq
        else:
            self.reordered += 1
        self.received += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Count healthy receivers lost; slow ones are expected to go."""
        if not self.slow:
            self.hub.disconnected += 1
        self.closed.set()

    def on_ws_connected(self, transport: WSTransport) -> None:
        """A slow text client stalls before reading a single line.

        From the first byte, so its TCP window is closed before the server's
        kernel has grown a large send buffer for it. It counts as ready: the
        server registers it whether it reads or not.
        """
        super().on_ws_connected(transport)
        if self.slow and self.hub.dialect is Dialect.TEXT:
            self.pause()
            self.is_ready = True
            self.hub.mark_ready()

    def on_ready(self) -> None:
        """A slow Socket.IO client stalls once in the namespace (it must ask first)."""
        if self.slow:
            self.pause()

    def pause(self) -> None:
        """Stop reading, as a stalled client would."""
        self.paused = True
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume(self) -> None:
        """Read again, fast, to find the close frame the server sent."""
        if self.transport is None or self.transport.is_disconnected:
            return
        underlying = self.transport.underlying_transport
        sock = underlying.get_extra_info("socket")
        if sock is not None:
            # The tiny stall-time buffer would take hundreds of round trips.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RESUME_RCVBUF)
        underlying.resume_reading()


@dataclass(frozen=True)
class SocketOptions:
    """Socket settings of one client: source address, receive buffer, MSS."""

    source: str | None = None
    rcvbuf: int | None = None
    mss: int | None = None

    def factory(self) -> Callable[[WSParsedURL], socket.socket | None] | None:
        """Return a picows socket factory, or ``None`` for the default socket."""
        if self == SocketOptions():
            return None
        return self.make_socket

    def make_socket(self, url: WSParsedURL) -> socket.socket:
        """Create the unconnected socket; picows connects it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # All before connect: the window and MSS are announced in the SYN.
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        if self.mss is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.mss)
        if self.source is not None:
            sock.bind((self.source, 0))
        return sock


async def open_client(
    url: str, endpoint: Endpoint, options: SocketOptions, handshake_s: float
) -> None:
    """Open one connection whose frames go to ``endpoint``."""
    await ws_connect(
        lambda: endpoint,
        url,
        socket_factory=options.factory(),
        websocket_handshake_timeout=handshake_s,
        enable_auto_pong=True,
        # Ours may answer a failed connect with plain HTTP; no redirects expected.
        max_redirects=0,
    )


async def open_paced(
    jobs: Sequence[tuple[str, Endpoint, SocketOptions]],
    concurrency: int,
    rate: float,
    handshake_s: float,
) -> list[str]:
    """Open every connection, at most ``concurrency`` at once and ``rate`` a second.

    Return the errors of the connections that failed.
    """
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(url: str, endpoint: Endpoint, options: SocketOptions) -> None:
        try:
            await open_client(url, endpoint, options, handshake_s)
        except (OSError, WSError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            gate.release()

    async with asyncio.TaskGroup() as group:
        for number, (url, endpoint, options) in enumerate(jobs):
            delay = start + number / rate - time.monotonic() if rate > 0 else 0.0
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            group.create_task(one(url, endpoint, options))
    return errors

"""Load generator: connect many clients to a fresh server, publish, measure.

Three loads, one per question the scenarios ask:

* :func:`run_fanout`: N clients in one room, senders publishing through a
  closed-loop window; deliveries/s, latency, loss, reorder, slow consumers.
* :func:`run_rooms`: clients spread over rooms, each posting at a fixed rate;
  server CPU per delivery and latency.
* :func:`run_idle`: many idle connections; memory per connection, connect
  rate, idle CPU with heartbeats running.

Receivers live in worker processes (:mod:`benchmarks.worker`) so the client
side can use more than one core; this process holds the senders and the
window. ``python -m benchmarks.loadgen --help`` runs one load from the shell.
"""

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import uvloop

from benchmarks.client import Endpoint, Hub, SocketOptions, open_paced
from benchmarks.commands import (
    ClientSpec,
    Connect,
    Connected,
    CountFrames,
    FrameCount,
    PhaseStarted,
    ResumeSlow,
    SendAtRate,
    SendDone,
    SlowReport,
    StartPhase,
    StopPhase,
    WorkerReport,
)
from benchmarks.dialects import url_for
from benchmarks.histogram import Histogram
from benchmarks.limits import raise_open_files_limit
from benchmarks.monitor import ProcessMonitor
from benchmarks.pool import WorkerPool, worker_pool
from benchmarks.server import ServerProcess, running_server
from benchmarks.targets import Target, by_name
from benchmarks.window import Window
from benchmarks.worker import cpu_seconds

HOST = "127.0.0.1"
REPLY_TIMEOUT = 30.0
SETTLE_POLL = 0.5


class LoadFailed(Exception):
    """The load could not be set up (connections refused, server silent)."""


@dataclass(frozen=True)
class ConnectSummary:
    """How connecting the receivers went."""

    opened: int
    ready: int
    per_second: float
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Latency:
    """Latency percentiles in microseconds."""

    p50_us: int
    p99_us: int
    max_us: int

    @classmethod
    def of(cls, histogram: Histogram) -> "Latency":
        """Summarise a histogram."""
        return cls(histogram.percentile(0.5), histogram.percentile(0.99), histogram.maximum)


def merge_latency(reports: list[WorkerReport]) -> Histogram:
    """Add up the latency histograms of all workers."""
    merged = Histogram()
    for report in reports:
        merged.merge(report.latency_us)
    return merged


class AckRelay:
    """Forwards worker acks to the window once it exists."""

    def __init__(self) -> None:
        self.target: Callable[[list[int]], None] | None = None

    def __call__(self, keys: list[int]) -> None:
        if self.target is not None:
            self.target(keys)


@contextlib.asynccontextmanager
async def server_and_workers(
    target: Target, workers: int, relay: Callable[[list[int]], None]
) -> AsyncIterator[tuple[ServerProcess, ProcessMonitor, WorkerPool]]:
    """Start the server and the workers; stop both afterwards (server first)."""
    raise_open_files_limit()
    async with worker_pool(workers, relay) as pool, running_server(target.command) as server:
        yield server, ProcessMonitor(server.pid), pool


class Pacing(Protocol):
    """How fast a load opens its receivers (every config has these fields)."""

    @property
    def connect_rate(self) -> float: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def connect_timeout(self) -> float: ...


async def connect_receivers(
    pool: WorkerPool, target: Target, port: int, specs: list[ClientSpec], pacing: Pacing
) -> ConnectSummary:
    """Open ``specs`` spread over the workers; fail unless every one is registered."""
    workers = len(pool)
    commands = [
        Connect(
            HOST,
            port,
            target.dialect,
            tuple(specs[w::workers]),
            max(1, pacing.concurrency // workers),
            pacing.connect_rate / workers,
            pacing.connect_timeout,
        )
        for w in range(workers)
    ]
    wait_s = pacing.connect_timeout * 3 + REPLY_TIMEOUT
    replies = await pool.ask_each(commands, Connected, wait_s)
    opened = sum(r.opened for r in replies)
    ready = sum(r.ready for r in replies)
    span = max(r.finished_at for r in replies) - min(r.started_at for r in replies)
    errors = tuple(e for r in replies for e in r.errors)
    if ready < len(specs):
        raise LoadFailed(f"{ready} of {len(specs)} clients ready; errors: {errors}")
    return ConnectSummary(opened, ready, opened / span if span > 0 else 0.0, errors)


async def open_senders(target: Target, port: int, count: int, handshake_s: float) -> list[Endpoint]:
    """Open the sender connections in this process and wait until registered."""
    hub = Hub(target.dialect)
    hub.expected_ready = count
    senders = [Endpoint(hub, i) for i in range(count)]
    url = url_for(target.dialect, HOST, port)
    errors = await open_paced([(url, s, SocketOptions()) for s in senders], count, 0, handshake_s)
    if errors:
        raise LoadFailed(f"senders failed to connect: {errors}")
    async with asyncio.timeout(handshake_s):
        await hub.all_ready.wait()
    return senders


@dataclass(frozen=True)
class FanoutConfig:
    """One room: ``clients`` connections, of which ``senders`` publish."""

    clients: int = 1000
    senders: int = 1
    window: int = 32
    size: int = 100
    duration: float = 10.0
    messages: int | None = None  # stop after this many, if sooner than duration
    workers: int = 1
    slow_fraction: float = 0.0
    connect_rate: float = 2000.0
    concurrency: int = 100
    connect_timeout: float = 60.0
    warmup_timeout: float = 60.0
    drain_timeout: float = 10.0
    slow_close_timeout: float = 5.0


@dataclass
class FanoutResult:
    """What one fan-out run measured."""

    target: str
    receivers: int
    slow: int
    messages: int
    deliveries: int
    elapsed_s: float
    deliveries_per_s: float
    latency: Latency
    lost: int
    reordered: int
    drained: bool
    connect_per_s: float
    server_cpu_s: float
    server_peak_rss: int
    client_cpu_s: float
    sender_cpu_s: float
    disconnected: int
    slow_close_codes: dict[str, int] = field(default_factory=dict)
    slow_still_open: int = 0


def fanout_specs(config: FanoutConfig) -> list[ClientSpec]:
    """Receivers, numbered after the senders, with the slow ones spread evenly."""
    receivers = config.clients - config.senders
    slow = round(receivers * config.slow_fraction)
    stride = receivers // slow if slow else 0
    return [
        ClientSpec(config.senders + i, slow=bool(stride) and i % stride == 0 and i // stride < slow)
        for i in range(receivers)
    ]


async def collect_slow(pool: WorkerPool, slow: int, wait_s: float) -> tuple[dict[str, int], int]:
    """Resume the slow receivers; count their close codes and those still open."""
    if not slow:
        return {}, 0
    replies = await pool.ask_all(ResumeSlow(wait_s), SlowReport, wait_s + REPLY_TIMEOUT)
    codes: dict[str, int] = {}
    for reply in replies:
        for code, count in reply.codes.items():
            codes[str(code)] = codes.get(str(code), 0) + count
    return codes, sum(r.still_open for r in replies)


@dataclass
class FanoutRig:
    """What a fan-out run holds while it publishes."""

    target: Target
    server: ServerProcess
    monitor: ProcessMonitor
    pool: WorkerPool
    relay: AckRelay
    senders: list[Endpoint]
    connected: ConnectSummary


async def run_fanout(target: Target, config: FanoutConfig) -> FanoutResult:
    """Run one fan-out load against a fresh server."""
    relay = AckRelay()
    async with server_and_workers(target, config.workers, relay) as (server, monitor, pool):
        connected = await connect_receivers(pool, target, server.port, fanout_specs(config), config)
        senders = await open_senders(target, server.port, config.senders, config.connect_timeout)
        rig = FanoutRig(target, server, monitor, pool, relay, senders, connected)
        try:
            return await publish_and_measure(rig, config)
        finally:
            for sender in senders:
                if sender.transport is not None:
                    sender.transport.disconnect(graceful=False)


async def publish_and_measure(rig: FanoutRig, config: FanoutConfig) -> FanoutResult:
    """Warm up, then publish through the window and collect what arrived."""
    pool, monitor = rig.pool, rig.monitor
    window = Window(rig.senders, rig.target.dialect, len(pool), config.window, config.size)
    rig.relay.target = window.on_acks
    warm_up = StartPhase(track_window=True, counting=False)
    await pool.ask_all(warm_up, PhaseStarted, REPLY_TIMEOUT)
    if not await window.warm_up(config.warmup_timeout):
        raise LoadFailed(f"warm-up probe never reached every client\n{rig.server.output()}")
    started = await pool.ask_all(StartPhase(track_window=True), PhaseStarted, REPLY_TIMEOUT)
    healthy = sum(s.healthy for s in started)
    monitor.start()
    cpu_before, own_before, t0 = monitor.cpu_seconds(), cpu_seconds(), time.monotonic()
    await window.run(config.duration, config.messages)
    drained = await window.drain(config.drain_timeout)
    t1 = window.last_done if drained and window.completed else time.monotonic()
    server_cpu, own_cpu = monitor.cpu_seconds() - cpu_before, cpu_seconds() - own_before
    await monitor.stop()
    reports = await pool.ask_all(StopPhase(), WorkerReport, REPLY_TIMEOUT)
    # Counted from the plan: a healthy receiver that dropped is not a slow one.
    slow = sum(spec.slow for spec in fanout_specs(config))
    slow_codes, still_open = await collect_slow(pool, slow, config.slow_close_timeout)
    deliveries = sum(r.received for r in reports)
    elapsed = max(t1 - t0, 1e-9)
    return FanoutResult(
        target=rig.target.name,
        receivers=healthy,
        slow=slow,
        messages=window.sent,
        deliveries=deliveries,
        elapsed_s=elapsed,
        deliveries_per_s=deliveries / elapsed,
        latency=Latency.of(merge_latency(reports)),
        lost=max(0, window.sent * healthy - deliveries),
        reordered=sum(r.reordered for r in reports),
        drained=drained,
        connect_per_s=rig.connected.per_second,
        server_cpu_s=server_cpu,
        server_peak_rss=monitor.peak_rss,
        client_cpu_s=sum(r.cpu_seconds for r in reports),
        sender_cpu_s=own_cpu,
        disconnected=sum(r.disconnected for r in reports),
        slow_close_codes=slow_codes,
        slow_still_open=still_open,
    )


@dataclass(frozen=True)
class RoomsConfig:
    """``clients`` spread round robin over ``rooms``, each posting ``rate``/s."""

    clients: int = 2000
    rooms: int = 200
    rate: float = 1.0
    duration: float = 15.0
    size: int = 100
    workers: int = 1
    connect_rate: float = 2000.0
    concurrency: int = 100
    connect_timeout: float = 60.0
    drain: float = 2.0


@dataclass
class RoomsResult:
    """What one many-rooms run measured."""

    target: str
    clients: int
    rooms: int
    messages: int
    deliveries: int
    expected: int
    lost: int
    reordered: int
    deliveries_per_s: float
    latency: Latency
    server_cpu_s: float
    server_cpu_us_per_delivery: float
    server_peak_rss: int
    client_cpu_s: float
    connect_per_s: float


def room_of(index: int, rooms: int) -> str:
    """Room name of client ``index``."""
    return f"r{index % rooms:03d}"


def expected_deliveries(sent: dict[int, int], received: dict[int, int], rooms: int) -> int:
    """Messages the receivers should have got: everything their room-mates posted."""
    per_room: dict[str, int] = {}
    for index, count in sent.items():
        per_room[room_of(index, rooms)] = per_room.get(room_of(index, rooms), 0) + count
    return sum(per_room.get(room_of(i, rooms), 0) - sent.get(i, 0) for i in received)


async def run_rooms(target: Target, config: RoomsConfig) -> RoomsResult:
    """Run one many-rooms load against a fresh server."""
    async with server_and_workers(target, config.workers, AckRelay()) as (server, monitor, pool):
        specs = [ClientSpec(i, room=room_of(i, config.rooms)) for i in range(config.clients)]
        connected = await connect_receivers(pool, target, server.port, specs, config)
        await pool.ask_all(StartPhase(track_window=False), PhaseStarted, REPLY_TIMEOUT)
        monitor.start()
        cpu_before = monitor.cpu_seconds()
        send = SendAtRate(config.rate, config.duration, config.size)
        done = await pool.ask_all(send, SendDone, config.duration + REPLY_TIMEOUT)
        await asyncio.sleep(config.drain)  # let the last posts arrive everywhere
        server_cpu = monitor.cpu_seconds() - cpu_before
        await monitor.stop()
        reports = await pool.ask_all(StopPhase(), WorkerReport, REPLY_TIMEOUT)
    sent = {i: n for d in done for i, n in d.sent.items()}
    received = {i: n for r in reports for i, n in r.received_by_client.items()}
    expected = expected_deliveries(sent, received, config.rooms)
    deliveries = sum(received.values())
    return RoomsResult(
        target=target.name,
        clients=connected.ready,
        rooms=config.rooms,
        messages=sum(sent.values()),
        deliveries=deliveries,
        expected=expected,
        lost=max(0, expected - deliveries),
        reordered=sum(r.reordered for r in reports),
        deliveries_per_s=deliveries / config.duration,
        latency=Latency.of(merge_latency(reports)),
        server_cpu_s=server_cpu,
        server_cpu_us_per_delivery=server_cpu / deliveries * 1e6 if deliveries else 0.0,
        server_peak_rss=monitor.peak_rss,
        client_cpu_s=sum(r.cpu_seconds for r in reports),
        connect_per_s=connected.per_second,
    )


@dataclass(frozen=True)
class IdleConfig:
    """``clients`` idle connections in rooms of ``room_size``."""

    clients: int = 10_000
    room_size: int = 100
    idle: float = 10.0
    workers: int = 1
    connect_rate: float = 5000.0
    concurrency: int = 200
    connect_timeout: float = 120.0
    settle_timeout: float = 30.0
    # Source addresses 127.0.0.2.. so the client side never runs short of ports.
    sources: int = 4


@dataclass
class IdleResult:
    """What one density run measured."""

    target: str
    clients: int
    connect_per_s: float
    connect_server_cpu_ms: float  # server CPU per connection while connecting
    rss_before: int
    rss_after: int
    rss_per_connection: float
    idle_cpu_percent: float
    disconnected_while_idle: int


async def wait_settled(pool: WorkerPool, wait_s: float) -> None:
    """Wait until no frames arrive for a poll interval (join lines delivered)."""
    deadline = time.monotonic() + wait_s
    previous = -1
    while time.monotonic() < deadline:
        counts = await pool.ask_all(CountFrames(), FrameCount, REPLY_TIMEOUT)
        total = sum(c.frames for c in counts)
        if total == previous:
            return
        previous = total
        await asyncio.sleep(SETTLE_POLL)


def idle_specs(config: IdleConfig) -> list[ClientSpec]:
    """Idle clients, ``room_size`` to a room, source addresses round robin."""
    return [
        ClientSpec(
            i,
            room=f"d{i // config.room_size:03d}",
            source=f"127.0.0.{2 + i % config.sources}" if config.sources else None,
        )
        for i in range(config.clients)
    ]


async def run_idle(target: Target, config: IdleConfig) -> IdleResult:
    """Run one density load against a fresh server."""
    async with server_and_workers(target, config.workers, AckRelay()) as (server, monitor, pool):
        await asyncio.sleep(1.0)  # let the freshly started server settle
        rss_before, cpu_at_start = monitor.rss(), monitor.cpu_seconds()
        connected = await connect_receivers(pool, target, server.port, idle_specs(config), config)
        connect_cpu = monitor.cpu_seconds() - cpu_at_start
        await wait_settled(pool, config.settle_timeout)
        rss_after = monitor.rss()
        idle = StartPhase(track_window=False, counting=False)
        await pool.ask_all(idle, PhaseStarted, REPLY_TIMEOUT)
        cpu_before, t0 = monitor.cpu_seconds(), time.monotonic()
        await asyncio.sleep(config.idle)
        idle_cpu = (monitor.cpu_seconds() - cpu_before) / (time.monotonic() - t0)
        reports = await pool.ask_all(StopPhase(), WorkerReport, REPLY_TIMEOUT)
    return IdleResult(
        target=target.name,
        clients=connected.ready,
        connect_per_s=connected.per_second,
        connect_server_cpu_ms=connect_cpu / max(1, connected.ready) * 1000,
        rss_before=rss_before,
        rss_after=rss_after,
        rss_per_connection=(rss_after - rss_before) / max(1, connected.ready),
        idle_cpu_percent=idle_cpu * 100,
        disconnected_while_idle=sum(r.disconnected for r in reports),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line of ``python -m benchmarks.loadgen``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", default="ours", help="ours, seed_serial, ws_broadcast, ...")
    parser.add_argument("--load", choices=("fanout", "rooms", "idle"), default="fanout")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--messages", type=int)
    parser.add_argument("--slow-fraction", type=float, default=0.0)
    parser.add_argument("--rooms", type=int, default=200)
    return parser.parse_args(argv)


async def run_from_args(args: argparse.Namespace) -> object:
    """Run the load the arguments describe."""
    target = by_name(args.target)
    if args.load == "rooms":
        rooms = RoomsConfig(
            clients=args.clients or 2000,
            rooms=args.rooms,
            duration=args.duration,
            workers=args.workers,
        )
        return await run_rooms(target, rooms)
    if args.load == "idle":
        return await run_idle(
            target, IdleConfig(clients=args.clients or 10_000, idle=args.duration)
        )
    fanout = FanoutConfig(
        clients=args.clients or 1000,
        senders=args.senders,
        window=args.window,
        duration=args.duration,
        messages=args.messages,
        workers=args.workers,
        slow_fraction=args.slow_fraction,
    )
    return await run_fanout(target, fanout)


def main(argv: list[str] | None = None) -> None:
    """Run one load and print its result as JSON."""
    args = parse_args(argv)
    result = uvloop.run(run_from_args(args))
    print(json.dumps(asdict(result), indent=2))  # type: ignore[call-overload]


if __name__ == "__main__":
    main()

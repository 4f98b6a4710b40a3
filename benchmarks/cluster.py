"""Several server processes acting as one room through Redis: run them, load them.

A :class:`Cluster` is ``nodes`` copies of one server, every node on one
private Redis (:mod:`benchmarks.redis_server`), or a single process without
Redis for the embedded baseline. Receivers and senders of one room are spread
round robin over the nodes, so most deliveries cross Redis. One run measures
deliveries (in total and to each node's clients), each node's CPU, the Redis
server's CPU and the Redis commands called during the measured phase.

Two loads share that machinery: the closed-loop window of scenario 1
(:class:`ClusterLoad` without ``rate``: throughput) and an open loop at a
fixed message rate (with ``rate``: latency at light load). A third,
:func:`run_background`, sends nothing and counts the Redis commands a
connected room costs by itself (presence refreshes, node heartbeats), which
would otherwise be counted against the messages of whichever run they fall in.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

import psutil

from benchmarks.client import Endpoint, Hub, SocketOptions, open_paced
from benchmarks.commands import ClientSpec, PhaseStarted, StartPhase, StopPhase, WorkerReport
from benchmarks.dialects import Dialect, url_for
from benchmarks.limits import raise_open_files_limit
from benchmarks.loadgen import (
    HOST,
    REPLY_TIMEOUT,
    AckRelay,
    Latency,
    LoadFailed,
    connect_receivers,
    merge_latency,
    wait_settled,
)
from benchmarks.monitor import ProcessMonitor
from benchmarks.pool import WorkerPool, worker_pool
from benchmarks.redis_server import RedisServer, calls_between, running_redis
from benchmarks.server import ServerCommand, ServerProcess, running_server
from benchmarks.targets import SOCKETIO, Target, ours
from benchmarks.window import Window
from benchmarks.worker import cpu_seconds

# How the Redis URL appears in the quoted commands: its port is chosen per run.
URL_SHOWN = "redis://127.0.0.1:{redis}/0"


@dataclass(frozen=True)
class Cluster:
    """A setup under test: ``nodes`` servers on one Redis, or one without Redis."""

    name: str
    label: str
    nodes: int
    redis: bool
    node: Callable[[str], Target]  # the node's server, given the Redis URL

    @property
    def dialect(self) -> Dialect:
        """How its clients speak (every node alike)."""
        return self.node(URL_SHOWN).dialect

    def shown(self) -> str:
        """The command of one node, as quoted in the results."""
        return self.node(URL_SHOWN).command.shown()


def ours_node(redis_url: str) -> Target:
    """Our server as one node of a cluster on ``redis_url``.

    The same limits as the embedded baseline, so the two differ by Redis
    alone; its SQLite file is its own (every node runs in its own ``{tmp}``).
    """
    return ours(extra=("--redis-url", redis_url))


def socketio_node(redis_url: str) -> Target:
    """The python-socketio peer with ``AsyncRedisManager`` on ``redis_url``."""
    argv = (*SOCKETIO.command.argv, "--redis-url", redis_url)
    return replace(SOCKETIO, command=ServerCommand(argv))


def ours_embedded() -> Cluster:
    """Our server in its embedded single-process mode: the baseline."""
    return Cluster("ours-embedded", "ours, embedded (no Redis)", 1, False, lambda _: ours())


def ours_redis(nodes: int) -> Cluster:
    """Our server in Redis mode on ``nodes`` nodes."""
    label = f"ours, Redis mode, {nodes} node{'s' if nodes > 1 else ''}"
    return Cluster(f"ours-redis-{nodes}", label, nodes, True, ours_node)


def socketio_redis(nodes: int) -> Cluster:
    """python-socketio with ``AsyncRedisManager`` on ``nodes`` nodes."""
    label = f"python-socketio + AsyncRedisManager, {nodes} nodes"
    return Cluster(f"socketio-redis-{nodes}", label, nodes, True, socketio_node)


@dataclass(frozen=True)
class ClusterLoad:
    """One room of ``members`` clients (``senders`` of them publish) spread over the nodes.

    Without ``rate``: closed loop, never more than ``window`` messages not yet
    delivered to every receiver. With ``rate``: that many messages a second in
    all, from the senders in turn, whatever the server does.
    """

    members: int = 1000
    senders: int = 6  # divisible by 1, 2 and 3 nodes: every node gets as many
    window: int = 64
    size: int = 100
    duration: float = 15.0
    rate: float | None = None
    workers: int = 2
    connect_rate: float = 2000.0
    concurrency: int = 100
    connect_timeout: float = 60.0
    warmup_timeout: float = 60.0
    drain_timeout: float = 10.0


@dataclass
class ClusterResult:
    """What one run against a cluster measured."""

    cluster: str
    nodes: int
    members: int
    receivers: int
    messages: int
    deliveries: int
    node_deliveries: tuple[int, ...]  # to the receivers connected to each node
    node_cpu_s: tuple[float, ...]
    node_sleeps: tuple[int, ...]  # voluntary context switches of each node
    redis_cpu_s: float
    redis_calls: dict[str, int]  # in the measured phase, by command
    elapsed_s: float
    latency: Latency
    lost: int
    reordered: int
    drained: bool
    client_cpu_s: float  # the receiver processes
    sender_cpu_s: float  # this process: the senders and the window
    machine_cpu_s: float  # every process on the machine, ours and others'

    @property
    def deliveries_per_s(self) -> float:
        """Deliveries per second over all nodes."""
        return self.deliveries / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def node_us_per_delivery(self) -> tuple[float, ...]:
        """Each node's CPU microseconds per delivery to its own clients."""
        return tuple(
            cpu / n * 1e6 if n else 0.0
            for cpu, n in zip(self.node_cpu_s, self.node_deliveries, strict=True)
        )

    @property
    def node_busy(self) -> tuple[float, ...]:
        """Each node's CPU in shares of a core over the phase."""
        return tuple(cpu / self.elapsed_s for cpu in self.node_cpu_s)

    @property
    def node_sleeps_per_1000(self) -> tuple[float, ...]:
        """How often each node slept (and was woken) per 1000 deliveries to its clients."""
        return tuple(
            s / n * 1000 if n else 0.0
            for s, n in zip(self.node_sleeps, self.node_deliveries, strict=True)
        )

    @property
    def worst_node_us_per_delivery(self) -> float:
        """The costliest node's CPU per delivery."""
        return max(self.node_us_per_delivery, default=0.0)

    @property
    def other_cpu_s(self) -> float:
        """CPU that processes outside this run took meanwhile (the machine is shared)."""
        ours = sum(self.node_cpu_s) + self.redis_cpu_s + self.client_cpu_s + self.sender_cpu_s
        return max(0.0, self.machine_cpu_s - ours)

    @property
    def redis_commands(self) -> int:
        """Redis commands the nodes called in the measured phase."""
        return sum(self.redis_calls.values())

    @property
    def redis_commands_per_message(self) -> float:
        """Redis commands per message posted."""
        return self.redis_commands / self.messages if self.messages else 0.0

    @property
    def redis_us_per_message(self) -> float:
        """Redis server CPU microseconds per message posted."""
        return self.redis_cpu_s / self.messages * 1e6 if self.messages else 0.0


def node_of(position: int, nodes: int) -> int:
    """The node a client at ``position`` (among receivers or senders) connects to."""
    return position % nodes


def receiver_specs(load: ClusterLoad, ports: Sequence[int]) -> list[ClientSpec]:
    """Receivers numbered after the senders, round robin over the nodes."""
    return [
        ClientSpec(load.senders + i, port=ports[node_of(i, len(ports))])
        for i in range(load.members - load.senders)
    ]


@dataclass
class ClusterRig:
    """What a run holds: the nodes, their Redis, the load generator's workers."""

    cluster: Cluster
    nodes: list[ServerProcess]
    redis: RedisServer | None
    pool: WorkerPool
    relay: AckRelay

    @property
    def ports(self) -> list[int]:
        """The nodes' ports, in node order."""
        return [node.port for node in self.nodes]

    def output(self) -> str:
        """The last lines of every node, for a failure message."""
        return "\n".join(f"node {i + 1}:\n{n.output()}" for i, n in enumerate(self.nodes))


@contextlib.asynccontextmanager
async def running_cluster(cluster: Cluster, workers: int) -> AsyncIterator[ClusterRig]:
    """Start Redis (if used), the nodes and the workers; stop the nodes before Redis."""
    raise_open_files_limit()
    relay = AckRelay()
    async with worker_pool(workers, relay) as pool, contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(running_redis()) if cluster.redis else None
        command = cluster.node(redis.url if redis is not None else "").command
        # One after the other: a node that fails to start then leaves no other half-started.
        nodes = [
            await stack.enter_async_context(running_server(command)) for _ in range(cluster.nodes)
        ]
        yield ClusterRig(cluster, nodes, redis, pool, relay)


@dataclass(frozen=True)
class Reading:
    """CPU and Redis counters at one instant."""

    node_cpu_s: tuple[float, ...]
    node_sleeps: tuple[int, ...]
    redis_cpu_s: float
    redis_calls: dict[str, int]
    own_cpu_s: float
    machine_cpu_s: float


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used since boot (all but idle)."""
    times = psutil.cpu_times()
    irq = getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)  # Linux only
    return float(times.user + times.nice + times.system + irq)


async def read_counters(rig: ClusterRig, monitors: Sequence[ProcessMonitor]) -> Reading:
    """Read every node's CPU time and, with Redis, its CPU time and command counters."""
    node_cpu = tuple(m.cpu_seconds() for m in monitors)
    sleeps = tuple(m.sleeps() for m in monitors)
    machine, own = machine_cpu_seconds(), cpu_seconds()
    if rig.redis is None:
        return Reading(node_cpu, sleeps, 0.0, {}, own, machine)
    redis_cpu = ProcessMonitor(rig.redis.pid).cpu_seconds()
    calls = await rig.redis.command_calls()
    return Reading(node_cpu, sleeps, redis_cpu, calls, own, machine)


async def open_senders(
    dialect: Dialect, ports: Sequence[int], count: int, wait_s: float
) -> list[Endpoint]:
    """Open ``count`` senders round robin over the nodes; wait until each is registered."""
    hub = Hub(dialect)
    hub.expected_ready = count
    senders = [Endpoint(hub, i) for i in range(count)]
    jobs = [
        (url_for(dialect, HOST, ports[node_of(i, len(ports))]), s, SocketOptions())
        for i, s in enumerate(senders)
    ]
    errors = await open_paced(jobs, count, 0, wait_s)
    if errors:
        raise LoadFailed(f"senders failed to connect: {errors}")
    async with asyncio.timeout(wait_s):
        await hub.all_ready.wait()
    return senders


async def publish_at_rate(window: Window, rate: float, duration: float) -> None:
    """Send ``rate`` messages a second for ``duration`` seconds, senders in turn."""
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < duration:
        # Catch up with the schedule: the rate holds even if a wake-up runs late.
        while sent <= elapsed * rate:
            window.publish(sent % len(window.senders))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))


async def run_cluster(cluster: Cluster, load: ClusterLoad) -> ClusterResult:
    """Run one load against a freshly started cluster."""
    async with running_cluster(cluster, load.workers) as rig:
        specs = receiver_specs(load, rig.ports)
        target = cluster.node("")  # only its dialect is used: each spec names its node
        await connect_receivers(rig.pool, target, rig.ports[0], specs, load)
        senders = await open_senders(cluster.dialect, rig.ports, load.senders, load.connect_timeout)
        try:
            return await publish_and_measure(rig, senders, specs, load)
        finally:
            for sender in senders:
                if sender.transport is not None:
                    sender.transport.disconnect(graceful=False)


async def publish_and_measure(
    rig: ClusterRig, senders: list[Endpoint], specs: list[ClientSpec], load: ClusterLoad
) -> ClusterResult:
    """Warm up until every receiver on every node hears a sender, then measure."""
    pool = rig.pool
    window = Window(senders, rig.cluster.dialect, len(pool), load.window, load.size)
    rig.relay.target = window.on_acks
    await pool.ask_all(StartPhase(track_window=True, counting=False), PhaseStarted, REPLY_TIMEOUT)
    # Also waits out each node's subscription to Redis: a probe is re-sent
    # until one reached every receiver, wherever it is connected.
    if not await window.warm_up(load.warmup_timeout):
        raise LoadFailed(f"warm-up probe never reached every client\n{rig.output()}")
    closed_loop = load.rate is None
    started = await pool.ask_all(StartPhase(track_window=closed_loop), PhaseStarted, REPLY_TIMEOUT)
    healthy = sum(s.healthy for s in started)
    monitors = [ProcessMonitor(node.pid) for node in rig.nodes]
    before, t0 = await read_counters(rig, monitors), time.monotonic()
    if load.rate is None:
        await window.run(load.duration, None)
        drained = await window.drain(load.drain_timeout)
        t1 = window.last_done if drained and window.completed else time.monotonic()
    else:
        await publish_at_rate(window, load.rate, load.duration)
        t1 = time.monotonic()
        await asyncio.sleep(min(load.drain_timeout, 2.0))  # the last messages' flight
    after = await read_counters(rig, monitors)
    reports = await pool.ask_all(StopPhase(), WorkerReport, REPLY_TIMEOUT)
    return summarise(rig, specs, load, window.sent, healthy, reports, before, after, t1 - t0)


def summarise(
    rig: ClusterRig,
    specs: list[ClientSpec],
    load: ClusterLoad,
    sent: int,
    healthy: int,
    reports: list[WorkerReport],
    before: Reading,
    after: Reading,
    elapsed: float,
) -> ClusterResult:
    """Add up what the workers and counters saw, per node where it matters."""
    node_by_index = {spec.index: rig.ports.index(spec.port or 0) for spec in specs}
    per_node = [0] * len(rig.nodes)
    for report in reports:
        for index, count in report.received_by_client.items():
            per_node[node_by_index[index]] += count
    deliveries = sum(per_node)
    lost = max(0, sent * healthy - deliveries)
    return ClusterResult(
        cluster=rig.cluster.name,
        nodes=len(rig.nodes),
        members=load.members,
        receivers=healthy,
        messages=sent,
        deliveries=deliveries,
        node_deliveries=tuple(per_node),
        node_cpu_s=tuple(a - b for a, b in zip(after.node_cpu_s, before.node_cpu_s, strict=True)),
        node_sleeps=tuple(
            a - b for a, b in zip(after.node_sleeps, before.node_sleeps, strict=True)
        ),
        redis_cpu_s=after.redis_cpu_s - before.redis_cpu_s,
        redis_calls=calls_between(before.redis_calls, after.redis_calls),
        elapsed_s=max(elapsed, 1e-9),
        latency=Latency.of(merge_latency(reports)),
        lost=lost,
        reordered=sum(r.reordered for r in reports),
        drained=lost == 0,
        client_cpu_s=sum(r.cpu_seconds for r in reports),
        sender_cpu_s=after.own_cpu_s - before.own_cpu_s,
        machine_cpu_s=after.machine_cpu_s - before.machine_cpu_s,
    )


@dataclass(frozen=True)
class Background:
    """Redis commands a connected but silent room costs: presence, heartbeats."""

    cluster: str
    members: int
    calls: dict[str, int]
    window_s: float

    @property
    def per_s(self) -> float:
        """Commands a second in all."""
        return sum(self.calls.values()) / self.window_s if self.window_s else 0.0


async def run_background(cluster: Cluster, load: ClusterLoad, window_s: float) -> Background:
    """Connect the room, let the joins settle, then count Redis commands with no messages."""
    async with running_cluster(cluster, load.workers) as rig:
        specs = receiver_specs(load, rig.ports)
        await connect_receivers(rig.pool, cluster.node(""), rig.ports[0], specs, load)
        senders = await open_senders(cluster.dialect, rig.ports, load.senders, load.connect_timeout)
        redis = rig.redis
        if redis is None:
            raise ValueError("background commands are counted on Redis setups only")
        try:
            await wait_settled(rig.pool, load.warmup_timeout)
            before = await redis.command_calls()
            await asyncio.sleep(window_s)
            after = await redis.command_calls()
        finally:
            for sender in senders:
                if sender.transport is not None:
                    sender.transport.disconnect(graceful=False)
    return Background(cluster.name, load.members, calls_between(before, after), window_s)

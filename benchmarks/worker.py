"""A load generator worker process: holds receivers and obeys the coordinator.

Started as ``python -m benchmarks.worker --fd N`` with one end of a socketpair;
see :mod:`benchmarks.commands` for the conversation.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import resource
import socket
import time

import uvloop
from picows import WSMsgType

from benchmarks.channel import Channel
from benchmarks.client import Hub, Receiver, SocketOptions, open_paced
from benchmarks.commands import (
    Acks,
    Connect,
    Connected,
    CountFrames,
    FrameCount,
    PhaseStarted,
    ResumeSlow,
    SendAtRate,
    SendDone,
    Shutdown,
    SlowReport,
    StartPhase,
    StopPhase,
    WorkerReport,
)
from benchmarks.dialects import Dialect, frame_for, url_for
from benchmarks.limits import raise_open_files_limit
from benchmarks.payload import make_payload

# A stalled client as it would be across a real network. On loopback the
# 64 KiB MSS lets the kernel give the server a ~4 MiB send buffer per socket
# at once, hiding the server's own outbound limit for minutes; a small MSS
# and receive buffer keep the kernel's share near 100 KiB at first.
SLOW_SOCKET = SocketOptions(rcvbuf=4096, mss=536)
SEND_TICK = 0.005


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """The receivers of one process and the commands that drive them."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.hub = Hub(Dialect.TEXT)
        self.receivers: list[Receiver] = []
        self.cpu_at_start = 0.0

    async def connect(self, command: Connect) -> Connected:
        """Open the connections and wait until the server registered them."""
        self.hub = Hub(command.dialect)
        # Not ready until every client we try is: connections that fail lower it below.
        self.hub.expected_ready = len(command.clients)
        started = time.monotonic()
        jobs = []
        for spec in command.clients:
            receiver = Receiver(self.hub, spec.index, spec.index, spec.slow)
            options = SocketOptions(spec.source)
            if spec.slow:
                options = dataclasses.replace(SLOW_SOCKET, source=spec.source)
            port = command.port if spec.port is None else spec.port
            url = url_for(command.dialect, command.host, port, spec.room)
            jobs.append((url, receiver, options))
        errors = await open_paced(jobs, command.concurrency, command.rate, command.timeout)
        finished = time.monotonic()
        self.receivers = [r for _, r, _ in jobs if r.transport is not None]
        self.hub.expected_ready = len(self.receivers)
        if self.hub.ready >= self.hub.expected_ready:
            self.hub.all_ready.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(command.timeout):
                await self.hub.all_ready.wait()
        return Connected(len(self.receivers), self.hub.ready, tuple(errors[:5]), started, finished)

    def start_phase(self, command: StartPhase) -> PhaseStarted:
        """Zero the statistics and start the phase."""
        self.hub.reset()
        for receiver in self.receivers:
            receiver.received = receiver.reordered = 0
        healthy = sum(1 for r in self.receivers if not r.paused and not r.closed.is_set())
        self.hub.need = healthy
        self.hub.track_window = command.track_window
        self.hub.on_acks = self.send_acks
        self.hub.counting = command.counting
        self.cpu_at_start = cpu_seconds()
        return PhaseStarted(healthy)

    def send_acks(self, keys: list[int]) -> None:
        """Forward acks to the coordinator."""
        self.channel.send(Acks(tuple(keys)))

    def stop_phase(self) -> WorkerReport:
        """Stop counting and report what was counted."""
        self.hub.counting = False
        self.hub.track_window = False
        healthy = [r for r in self.receivers if not r.slow]
        return WorkerReport(
            received=sum(r.received for r in healthy),
            reordered=sum(r.reordered for r in healthy),
            received_by_client={r.index: r.received for r in healthy},
            latency_us=self.hub.latency_us.compact(),
            disconnected=self.hub.disconnected,
            cpu_seconds=cpu_seconds() - self.cpu_at_start,
        )

    async def send_at_rate(self, command: SendAtRate) -> SendDone:
        """Post from every client, round robin, at ``rate`` per client per second."""
        senders = [r for r in self.receivers if r.transport is not None and not r.slow]
        sent = dict.fromkeys((r.index for r in senders), 0)
        if not senders:
            return SendDone(sent)
        total_rate = command.rate * len(senders)
        start = time.monotonic()
        posted = 0
        while (elapsed := time.monotonic() - start) < command.duration:
            # Catch up to the schedule each tick: the rate holds even if a tick runs late.
            due = int(elapsed * total_rate)
            while posted < due:
                receiver = senders[posted % len(senders)]
                self.post(receiver, sent[receiver.index], command.size)
                sent[receiver.index] += 1
                posted += 1
            await asyncio.sleep(SEND_TICK)
        return SendDone(sent)

    def post(self, receiver: Receiver, seq: int, size: int) -> None:
        """Send one benchmark message from ``receiver``."""
        transport = receiver.transport
        if transport is None or transport.is_disconnected:
            return
        payload = make_payload(receiver.index, seq, time.monotonic_ns(), size)
        transport.send(WSMsgType.TEXT, frame_for(self.hub.dialect, payload))

    async def resume_slow(self, command: ResumeSlow) -> SlowReport:
        """Read the slow clients' backlog and collect how each was closed."""
        slow = [r for r in self.receivers if r.slow]
        for receiver in slow:
            receiver.resume()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(command.timeout):
                for receiver in slow:
                    await receiver.closed.wait()
        codes: dict[int | None, int] = {}
        for receiver in slow:
            if receiver.closed.is_set():
                codes[receiver.close_code] = codes.get(receiver.close_code, 0) + 1
        return SlowReport(codes, sum(1 for r in slow if not r.closed.is_set()))

    async def shutdown(self) -> None:
        """Close every connection, giving each a moment to finish its handshake."""
        for receiver in self.receivers:
            if receiver.transport is not None and not receiver.transport.is_disconnected:
                receiver.transport.disconnect(graceful=False)
        await asyncio.sleep(0)

    async def serve(self) -> None:
        """Obey commands until :class:`Shutdown` or the coordinator goes away."""
        while True:
            try:
                command = await self.channel.recv()
            except (asyncio.IncompleteReadError, ConnectionError):
                command = Shutdown()
            match command:
                case Connect():
                    self.channel.send(await self.connect(command))
                case StartPhase():
                    self.channel.send(self.start_phase(command))
                case SendAtRate():
                    self.channel.send(await self.send_at_rate(command))
                case StopPhase():
                    self.channel.send(self.stop_phase())
                case ResumeSlow():
                    self.channel.send(await self.resume_slow(command))
                case CountFrames():
                    self.channel.send(FrameCount(self.hub.frames))
                case Shutdown():
                    await self.shutdown()
                    return
                case _:
                    raise TypeError(f"unknown command {command!r}")


async def run_worker(fd: int) -> None:
    """Serve the coordinator on the inherited socket ``fd``."""
    sock = socket.socket(fileno=fd)
    channel = await Channel.open(sock)
    try:
        await Worker(channel).serve()
    finally:
        await channel.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(description="load generator worker")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    uvloop.run(run_worker(args.fd))


if __name__ == "__main__":
    main()

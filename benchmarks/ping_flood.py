"""Does a ping flood slow other clients? ``python -m benchmarks.ping_flood``

One chat.v1 client measures the round trip of an application ``ping`` every
150 ms, first alone, then while 4 flooders send WebSocket ping frames as fast
as they can (each reconnecting when closed), once with the default flood
control (``--rate-limit 10 --rate-burst 20``) and once with it off
(``--rate-limit 0``, what every frame but text used to get). Writes
benchmarks/FLOOD.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from . import separate
from .server import ServerCommand, running_server

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "FLOOD.md"
FLOODERS = 4
INTERVAL = 0.15  # under the default 10 frames/s, so the measuring client is never limited
# A masked client ping with a zero masking key (allowed: the payload is unchanged).
PING = b"\x89\x84\x00\x00\x00\x00ping"
BATCH = PING * 256
HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass
class FloodCount:
    frames: int = 0
    connections: int = 0


def command(rate_limit: str) -> ServerCommand:
    return ServerCommand(
        (
            sys.executable, "-m", "chatserver", "--host", "127.0.0.1", "--port", "{port}",
            "--db", "{tmp}/chat.db", "--admin-token", "bench", "--heartbeat", "30",
            "--max-connections-per-ip", "0", "--rate-limit", rate_limit, "--rate-burst", "20",
        )
    )  # fmt: skip


async def flood(port: int, until: float, count: FloodCount) -> None:
    """Send pings as fast as the socket takes them; reconnect whenever closed."""
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count.connections += 1
        writer.write(HANDSHAKE.format(port=port).encode())
        drain = asyncio.create_task(_discard(reader))
        with contextlib.suppress(ConnectionError):
            while not drain.done() and time.monotonic() < until:
                writer.write(BATCH)
                await writer.drain()
                count.frames += 256
        writer.close()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await drain


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def echo_times(session: aiohttp.ClientSession, port: int, seconds: float) -> list[float]:
    """Round trips (ms) of application pings, one every INTERVAL, for ``seconds``."""
    times: list[float] = []
    async with session.ws_connect(f"ws://127.0.0.1:{port}/ws", protocols=("chat.v1",)) as ws:
        await asyncio.wait_for(ws.receive(), 10)  # welcome
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            start = time.perf_counter()
            await ws.send_str('{"type":"ping"}')
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if '"pong"' in str(msg.data):
                    break
            times.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(INTERVAL)
    return times


def row(label: str, times: list[float], count: FloodCount | None) -> str:
    quantiles = statistics.quantiles(times, n=100, method="inclusive")
    flood_text = f"{count.frames:,} pings on {count.connections} connections" if count else "-"
    return (
        f"| {label} | {len(times)} | {statistics.median(times):.2f} | {quantiles[98]:.2f} "
        f"| {max(times):.2f} | {flood_text} |"
    )


async def flood_process(port: int, seconds: float) -> FloodCount:
    """Run the flooders in their own process, so their CPU is not the echo client's."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.ping_flood", "--flood", str(port),
        "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await child.communicate()
    frames, connections = (int(part) for part in out.split())
    return FloodCount(frames, connections)


async def run_flooders(port: int, seconds: float) -> None:
    count = FloodCount()
    until = time.monotonic() + seconds
    await asyncio.gather(*(flood(port, until, count) for _ in range(FLOODERS)))
    print(count.frames, count.connections)


async def measure(
    rate_limit: str, seconds: float, flooded: bool
) -> tuple[list[float], FloodCount | None]:
    async with running_server(command(rate_limit)) as server, aiohttp.ClientSession() as session:
        echo = echo_times(session, server.port, seconds)
        if not flooded:
            return await echo, None
        times, count = await asyncio.gather(echo, flood_process(server.port, seconds))
    return times, count


async def main_async(seconds: float) -> list[str]:
    lines = ["| run | samples | median ms | p99 ms | max ms | flood |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(lines), flush=True)
    runs = [("no flood", "10", False)]
    runs.append((f"{FLOODERS} ping flooders, --rate-limit 10 (default)", "10", True))
    runs.append((f"{FLOODERS} ping flooders, --rate-limit 0 (flood control off)", "0", True))
    for label, rate_limit, flooded in runs:
        times, count = await measure(rate_limit, seconds, flooded)
        lines.append(row(label, times, count))
        print(lines[-1], flush=True)
    return lines


def document(lines: list[str], seconds: float) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return "\n".join(
        [
            "# Ping flood",
            "",
            f"Written by `python -m benchmarks.ping_flood --seconds {seconds:g}`; "
            "do not edit by hand. " + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " "),
            "",
            f"Commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores, load average at the end {load} (the machine is shared: "
            "tails reflect other work on it; the medians are the comparison).",
            "",
            *lines,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--flood", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if args.flood:
        asyncio.run(run_flooders(args.flood, args.seconds))
        return
    lines = asyncio.run(main_async(args.seconds))
    args.output.write_text(document(lines, args.seconds))
    if args.output == DEFAULT_OUTPUT:
        separate.refresh_results()


if __name__ == "__main__":
    main()

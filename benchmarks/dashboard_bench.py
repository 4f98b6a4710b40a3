"""The admin dashboard under 10,000 live connections.

Starts ``python -m chatserver`` in a child process, opens N raw WebSocket
chat connections (spread over rooms), logs in to the dashboard and measures:

* page load: ``GET /admin/`` server render time (median, p95) and size, plus
  a filtered page and an API page; with Chromium present, the browser's time
  from navigation until the push channel has delivered the first rows;
* the push channel: bytes/s with idle connections and with chat traffic on
  the viewed rows, and how long a new view (filter, far page, sort by
  buffer) takes to come back.

``python -m benchmarks.dashboard_bench --connections 10000`` (about a minute).
The client side is one process of raw asyncio sockets (no WebSocket library
per connection), so 10,000 connections stay cheap; RLIMIT_NOFILE is raised
to its hard limit for both processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.limits import raise_open_files_limit
from benchmarks.monitor import ProcessMonitor
from benchmarks.report import table
from benchmarks.server import ServerCommand, running_server

TOKEN = "bench-admin-token"


# --------------------------------------------------------------------------- raw clients


class RawChat(asyncio.Protocol):
    """A text-dialect chat client that discards what it receives (counting bytes)."""

    def __init__(self, request: bytes, upgraded: asyncio.Future[None]) -> None:
        self.request = request
        self.upgraded = upgraded
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.bytes_in = 0
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not
        # registered as asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.open or self.upgraded.done():
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            if self.head.startswith(b"HTTP/1.1 101"):
                self.open = True
                self.upgraded.set_result(None)
            else:
                status = self.head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.upgraded.set_exception(ConnectionError(status))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during the handshake"))

    def send_text(self, text: str) -> None:
        """One masked text frame (clients must mask, RFC 6455 5.3)."""
        if self.transport is None or not self.open:
            return
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        assert len(payload) < 126
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + mask + masked)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


SOURCES = 4  # source addresses 127.0.0.2..5, as in the density scenario


async def open_chat(port: int, name: str, room: str, index: int = 0) -> RawChat:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?name={name}&room={room} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    upgraded: asyncio.Future[None] = loop.create_future()
    # Spread over several source addresses: earlier runs leave thousands of
    # 127.0.0.1 ports in TIME_WAIT, and 10,000 more from one address can stall.
    source = (f"127.0.0.{2 + index % SOURCES}", 0)
    _, protocol = await loop.create_connection(
        lambda: RawChat(request, upgraded), "127.0.0.1", port, local_addr=source
    )
    await asyncio.wait_for(upgraded, 30)
    return protocol


async def open_many(port: int, count: int, rooms: int, parallel: int) -> list[RawChat]:
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> RawChat:
        async with gate:
            return await open_chat(port, f"b{index}", f"room{index % rooms}", index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# --------------------------------------------------------------------------- the server


SERVER = ServerCommand(
    (
        sys.executable, "-m", "chatserver", "--port", "{port}", "--db", "{tmp}/bench.db",
        "--admin-token", TOKEN, "--max-connections-per-ip", "0", "--rate-limit", "0",
        "--heartbeat", "0", "--log-level", "WARNING",
    )
)  # fmt: skip


# --------------------------------------------------------------------------- measuring


@dataclass
class Results:
    connections: int = 0
    connect_seconds: float = 0.0
    server_rss_mib: float = 0.0
    page: dict[str, float] = field(default_factory=dict)
    push: dict[str, float] = field(default_factory=dict)
    browser: dict[str, float] = field(default_factory=dict)
    room: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


async def log_in(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(base + "/admin/login") as response:
        match = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert match is not None
    data = {"csrf": match.group(1), "token": TOKEN}
    async with http.post(base + "/admin/login", data=data, allow_redirects=False) as response:
        assert response.status == 303, response.status


async def timed_get(http: aiohttp.ClientSession, url: str, rounds: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        async with http.get(url) as response:
            body = await response.read()
            assert response.status == 200, response.status
        times.append((time.perf_counter() - started) * 1000)
        size = len(body)
    return times, size


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


async def measure_page(http: aiohttp.ClientSession, base: str, results: Results) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times, size = await timed_get(http, base + "/admin/", 20)
    results.page.update(
        render_median_ms=statistics.median(times), render_p95_ms=p95(times), page_bytes=size
    )
    times, _ = await timed_get(http, base + "/admin/?q=b9999", 10)
    results.page["filtered_render_median_ms"] = statistics.median(times)
    started = time.perf_counter()
    async with http.get(
        base + "/admin/api/connections?page=150&per_page=50", headers=headers
    ) as response:
        assert response.status == 200
        await response.read()
    results.page["api_far_page_ms"] = (time.perf_counter() - started) * 1000


@dataclass
class Channel:
    ws: aiohttp.ClientWebSocketResponse
    bytes: int = 0
    messages: int = 0

    async def next_conns(self) -> dict[str, Any]:
        async with asyncio.timeout(10.0):
            while True:
                message = await self.receive()
                if message["type"] == "conns":
                    return message

    async def receive(self) -> dict[str, Any]:
        msg = await self.ws.receive()
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        self.bytes += len(msg.data)
        self.messages += 1
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def drain_for(self, seconds: float) -> tuple[int, int]:
        """Bytes and messages received during ``seconds``."""
        before_bytes, before_messages = self.bytes, self.messages
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self.receive()
        return self.bytes - before_bytes, self.messages - before_messages

    async def view_latency_ms(self, **view: Any) -> float:
        started = time.perf_counter()
        await self.ws.send_str(json.dumps({"type": "view", **view}))
        while not (await self.next_conns()).get("reset"):
            pass
        return (time.perf_counter() - started) * 1000


async def measure_push(
    http: aiohttp.ClientSession, base: str, clients: list[RawChat], seconds: float, results: Results
) -> None:
    ws = await http.ws_connect(base + "/admin/live", origin=base, max_msg_size=0)
    channel = Channel(ws)
    results.push["first_view_ms"] = await channel.view_latency_ms(per_page=50)
    await channel.drain_for(1.5)  # let the first tick's room and stats rows settle
    idle_bytes, idle_messages = await channel.drain_for(seconds)
    results.push["idle_bytes_per_s"] = idle_bytes / seconds
    results.push["idle_messages_per_s"] = idle_messages / seconds

    talkers = clients[:50] + clients[50::200]  # the viewed page plus some others
    stop = asyncio.Event()

    async def talk() -> None:
        counter = 0
        while not stop.is_set():
            for client in talkers:
                client.send_text(f"bench message {counter}")
            counter += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    traffic = asyncio.create_task(talk())
    await channel.drain_for(1.5)
    busy_bytes, busy_messages = await channel.drain_for(seconds)
    stop.set()
    await traffic
    results.push["busy_bytes_per_s"] = busy_bytes / seconds
    results.push["busy_messages_per_s"] = busy_messages / seconds
    results.push["busy_chat_messages_per_s"] = float(len(talkers))
    results.push["view_filter_ms"] = await channel.view_latency_ms(q="b777")
    results.push["view_page_150_ms"] = await channel.view_latency_ms(page=150)
    results.push["view_sort_buffer_ms"] = await channel.view_latency_ms(sort="buffer")
    results.push["view_room_ms"] = await channel.view_latency_ms(room="room7")
    await ws.close()


async def measure_room(
    http: aiohttp.ClientSession,
    base: str,
    clients: list[RawChat],
    args: argparse.Namespace,
    results: Results,
) -> None:
    """The room page of room7 (1/rooms of the connections) with 50 stored messages,
    then its push channel while the room chats ten messages a second."""
    seconds = args.seconds
    speakers = clients[7 % args.rooms :: args.rooms][:10]  # index % rooms == 7: in room7
    for counter in range(5):
        for client in speakers:
            client.send_text(f"room bench {counter}")
    await asyncio.sleep(1.0)
    times, size = await timed_get(http, base + "/admin/rooms/room7", 20)
    results.room.update(render_median_ms=statistics.median(times), render_p95_ms=p95(times))
    results.room["page_bytes"] = size
    ws = await http.ws_connect(base + "/admin/live", origin=base, max_msg_size=0)
    channel = Channel(ws)
    await ws.send_str(json.dumps({"type": "room", "room": "room7", "after": 10**9}))
    await channel.drain_for(1.5)
    stop = asyncio.Event()

    async def talk() -> None:
        counter = 0
        while not stop.is_set():
            for client in speakers:
                client.send_text(f"room bench live {counter}")
            counter += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    traffic = asyncio.create_task(talk())
    await channel.drain_for(1.5)
    busy_bytes, busy_messages = await channel.drain_for(seconds)
    stop.set()
    await traffic
    results.room["push_bytes_per_s"] = busy_bytes / seconds
    results.room["push_messages_per_s"] = busy_messages / seconds
    results.room["room_chat_messages_per_s"] = float(len(speakers))
    await ws.close()


async def measure_metrics(http: aiohttp.ClientSession, base: str, results: Results) -> None:
    """``GET /metrics``: time to answer (one walk over the connections) and size."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times, size = [], 0
    for _ in range(20):
        started = time.perf_counter()
        async with http.get(base + "/metrics", headers=headers) as response:
            body = await response.read()
            assert response.status == 200, response.status
        times.append((time.perf_counter() - started) * 1000)
        size = len(body)
    results.metrics.update(
        scrape_median_ms=statistics.median(times), scrape_p95_ms=p95(times), bytes=size
    )
    # At a 15 s scrape interval (Prometheus' usual), the bytes/s it costs.
    results.metrics["bytes_per_s_at_15s_interval"] = size / 15


async def measure_browser(base: str, results: Results) -> None:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return
    if not os.access(CHROMIUM, os.X_OK):
        return
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(base + "/admin/login")
        await page.fill("#token", TOKEN)
        await page.click("form button[type=submit]")
        await page.wait_for_selector('body[data-live="1"]', timeout=30_000)
        times, dom = [], []
        for _ in range(5):
            started = time.perf_counter()
            await page.goto(base + "/admin/")
            await page.wait_for_selector('body[data-live="1"]', timeout=30_000)
            times.append((time.perf_counter() - started) * 1000)
            dom.append(
                await page.evaluate(
                    "() => { const t = performance.getEntriesByType('navigation')[0];"
                    " return t.domContentLoadedEventEnd - t.startTime; }"
                )
            )
        await page.screenshot(path="/tmp/dashboard-10k.png")
        await browser.close()
    results.browser = {
        "dom_content_loaded_ms": statistics.median(dom),
        "until_live_rows_ms": statistics.median(times),
    }


# --------------------------------------------------------------------------- main


@contextlib.asynccontextmanager
async def chat_clients(port: int, args: argparse.Namespace) -> AsyncIterator[list[RawChat]]:
    clients = await open_many(port, args.connections, args.rooms, args.parallel)
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


async def run(args: argparse.Namespace) -> Results:
    results = Results(connections=args.connections)
    async with running_server(SERVER) as server:
        base = f"http://127.0.0.1:{server.port}"
        started = time.perf_counter()
        async with chat_clients(server.port, args) as clients:
            results.connect_seconds = time.perf_counter() - started
            await asyncio.sleep(2)  # let presence and session writes settle
            results.server_rss_mib = ProcessMonitor(server.pid).rss() / 2**20
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                await log_in(http, base)
                async with http.get(base + "/healthz") as response:
                    health = await response.json()
                assert health["connections"] == args.connections, health
                await measure_page(http, base, results)
                await measure_push(http, base, clients, args.seconds, results)
                await measure_room(http, base, clients, args, results)
                await measure_metrics(http, base, results)
            if not args.no_browser:
                await measure_browser(base, results)
    return results


def report(results: Results) -> str:
    lines = [
        f"connections: {results.connections} (opened in {results.connect_seconds:.1f} s; "
        f"server RSS {results.server_rss_mib:.0f} MiB)",
    ]
    for section in ("page", "push", "browser", "room", "metrics"):
        for key, value in getattr(results, section).items():
            lines.append(f"{section}.{key}: {value:,.1f}")
    return "\n".join(lines)


def markdown(results: Results, command: str) -> str:
    """The dashboard's section of RESULTS.md (one run: each figure is a median
    over its own repetitions inside the run, as named)."""
    rows = [
        ("connections held", f"{results.connections:,}"),
        ("time to open them", f"{results.connect_seconds:.1f} s"),
        ("server RSS with them", f"{results.server_rss_mib:.0f} MiB"),
    ]
    for section in ("page", "push", "browser", "room", "metrics"):
        for key, value in getattr(results, section).items():
            rows.append((f"{section}: {key.replace('_', ' ')}", f"{value:,.1f}"))
    return (
        f"## 6. Admin dashboard under {results.connections:,} connections\n\n"
        "Server render of `GET /admin/` (median and p95 of repeated loads), a filtered "
        "page and a far API page; the push channel's bytes/s while idle and while the "
        "viewed rows chat; how fast a new view (filter, page, sort, room) comes back; "
        "and, in Chromium, the time until the live rows show.\n\n"
        f"{table(('measure', 'value'), rows)}\n\n- `{command}`"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="per push measurement")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timing")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    needed = args.connections + 1024
    if raise_open_files_limit() < needed:
        raise SystemExit(f"the open-files hard limit is below the {needed} needed")
    results = asyncio.run(run(args))
    print(report(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results.__dict__, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

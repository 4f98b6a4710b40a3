"""A bounded long run: ``python -m benchmarks.soak [--seconds 600]`` (``make soak``).

500 chat.v1 clients in 20 rooms post numbered messages; some disconnect at
random and resume with their session token and cursor; an operator kicks and
bans extra clients through the admin API; half way through the server gets
SIGTERM and is restarted on the same port and database, and everyone
resumes. A progress line every 10 s. At the end:

* every client saw each of its room's message ids exactly once, in order,
  with no gap (across its resumes and the restart), and every resume
  reported nothing lost;
* every kicked client got 4500 and every banned one 4501;
* the server's RSS, open file descriptors and asyncio tasks, sampled every
  10 s after warm-up, stay flat.

Exits non-zero if any check fails; writes benchmarks/SOAK.md. With
``--redis`` the same runs on two nodes sharing a private Redis, which is
restarted half way (benchmarks/soak_redis.py; writes benchmarks/SOAK-REDIS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from . import separate
from .server import free_port

CLIENTS = 500
ROOMS = 20
VICTIMS = 20  # extra clients for the operator to kick (half) and ban (half)
POST_INTERVAL = 2.0  # seconds between one client's messages (250 messages/s in total)
DROP_RATE = 0.002  # chance per client per second of a random disconnect and resume
PROGRESS = 10.0
TOKEN = "soak-admin-token"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "SOAK.md"
READY = b"Server started on "


@dataclass
class Totals:
    sent: int = 0
    received: int = 0
    resumes: int = 0
    drops: int = 0
    restarts: int = 0
    # New members whose first live message had an id at or below the welcome's
    # last_ids for the room: the id was assigned before the join, delivered after.
    early: int = 0
    acked: int = 0  # own messages echoed back: acknowledged, so they must reach everyone
    errors: dict[str, int] = field(default_factory=dict)  # error events by code
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


@dataclass
class Sample:
    at: float
    rss_mib: float
    fds: int
    tasks: int
    connections: int


class Server:
    """``python -m chatserver`` on a fixed port and database, restartable."""

    def __init__(self, port: int, tmp: str, backend: list[str] | None = None) -> None:
        self.port = port
        # The embedded store by default; Redis mode passes --redis-url and --node-id.
        backend = ["--db", f"{tmp}/chat.db"] if backend is None else backend
        self.argv = [
            sys.executable, "-m", "chatserver", "--host", "127.0.0.1", "--port", str(port),
            *backend, "--admin-token", TOKEN, "--heartbeat", "30",
            "--max-connections-per-ip", "0", "--rate-limit", "10", "--log-level", "WARNING",
        ]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[bytes] = []
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            while READY not in (line := await self.process.stdout.readline()):
                if not line:
                    raise RuntimeError("server did not start: " + b"".join(self.output).decode())
                self.output.append(line)
        self._drain = asyncio.create_task(self._read(self.process.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.output.append(line)

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 30)
        if self._drain is not None:
            await self._drain
        return code

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


class Client:
    """One chat.v1 client checking that its room's ids arrive gap-free, once each."""

    def __init__(self, index: int, soak: Soak, victim: bool = False) -> None:
        self.index = index
        self.soak = soak
        self.victim = victim
        self.name = f"{'v' if victim else 'c'}{index}"
        self.room = f"r{index % ROOMS}"
        self.last_id = 0  # the newest message id of self.room this client has seen
        self.welcome_id = 0  # the room's newest id according to the first welcome
        self.session = ""
        self.seq = 0
        self.acked_seq = 0  # the newest of its own messages echoed back
        self.finished = False  # was connected at the end and left by itself
        self.close_code: int | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    def url(self) -> str:
        base = f"ws://127.0.0.1:{self.soak.ws_port()}/ws?"
        if self.session:
            return base + f"session={self.session}&last={self.room}:{self.last_id}"
        return base + f"name={self.name}&room={self.room}"

    async def run(self, until: float) -> None:
        while time.monotonic() < until and self.close_code not in {4500, 4501}:
            # The server may be restarting: retry below.
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await self._connection(until)
            if self.close_code in {4500, 4501}:
                return
            await asyncio.sleep(random.uniform(0.5, 2.0))

    async def _connection(self, until: float) -> None:
        session = self.soak.session
        async with session.ws_connect(self.url(), protocols=("chat.v1",), heartbeat=None) as ws:
            self.ws = ws
            poster = asyncio.create_task(self._post(ws, until))
            try:
                await self._receive(ws)
            finally:
                poster.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poster
                self.ws = None
            if ws.close_code is not None:
                self.close_code = ws.close_code

    async def _post(self, ws: aiohttp.ClientWebSocketResponse, until: float) -> None:
        await asyncio.sleep(random.uniform(0, POST_INTERVAL))
        while time.monotonic() < until:
            self.seq += 1
            text = f"{self.name} {self.seq}"
            await ws.send_str(json.dumps({"type": "message", "text": text, "room": self.room}))
            self.soak.totals.sent += 1
            await asyncio.sleep(POST_INTERVAL * random.uniform(0.8, 1.2))
            if not self.victim and random.random() < DROP_RATE * POST_INTERVAL:
                self.soak.totals.drops += 1
                await ws.close()  # a random disconnect: run() resumes
                return
        # The end: let everything in flight arrive, then leave. (Waiting for the
        # server instead would never end: its heartbeat pings keep receive() busy.)
        await asyncio.sleep(5)
        self.finished = True
        await ws.close()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return
            self._on_event(json.loads(msg.data))

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "welcome":
            if self.session and not event["resumed"]:
                self.soak.totals.problem(f"{self.name}: its session was not resumed")
            self.session = event["session"]
            if not event["resumed"]:
                # A new member's stream starts at its first message: see early_ids.
                self.welcome_id = event["last_ids"].get(self.room, 0)
                self.last_id = -1
            else:
                self.soak.totals.resumes += 1
        elif kind == "message" and event["room"] == self.room:
            self.soak.totals.received += 1
            self._one_order(event)
            if self.last_id == -1:
                if event["id"] <= self.welcome_id:
                    self.soak.totals.early += 1
                self.last_id = event["id"] - 1
            if event["id"] != self.last_id + 1 and not self.victim:
                self.soak.totals.problem(
                    f"{self.name}: got id {event['id']} after {self.last_id} in {self.room}"
                )
            self.last_id = max(self.last_id, event["id"])
        elif kind == "resumed":
            lost = sum(room["lost"] for room in event["rooms"].values())
            if lost:
                self.soak.totals.problem(f"{self.name}: a resume lost {lost} message(s)")
            if any(room.get("epoch_changed") for room in event["rooms"].values()):
                self.soak.totals.problem(f"{self.name}: a resume found a new epoch")
        elif kind == "error":
            # broker_unavailable (Redis down) and the like: never acknowledged, so
            # never owed to anyone; counted, not judged.
            code = str(event.get("code"))
            self.soak.totals.errors[code] = self.soak.totals.errors.get(code, 0) + 1

    def _one_order(self, event: dict[str, Any]) -> None:
        """The same id is the same message for everyone; a sender's echoes keep its order."""
        text = event["text"]
        seen = self.soak.order.setdefault(self.room, {}).setdefault(event["id"], text)
        if seen != text:
            self.soak.totals.problem(
                f"{self.name}: id {event['id']} in {self.room} is {text!r}, others saw {seen!r}"
            )
        name, _, seq = text.partition(" ")
        if name == self.name:
            self.soak.totals.acked += 1
            if int(seq) <= self.acked_seq:
                self.soak.totals.problem(f"{self.name}: echo of {seq} after {self.acked_seq}")
            self.acked_seq = max(self.acked_seq, int(seq))


class Soak:
    def __init__(self, seconds: float, clients: int = CLIENTS, victims: int = VICTIMS) -> None:
        self.seconds = seconds
        self.clients = clients
        self.victims = victims
        self.totals = Totals()
        self.samples: list[Sample] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="soak-")
        self.server = Server(free_port(), self.tmp.name)
        self.session: aiohttp.ClientSession
        self.restarted_at = 0.0
        self.order: dict[str, dict[int, str]] = {}  # room -> id -> text, as first seen

    def ws_port(self) -> int:
        """The port a client (re)connects to."""
        return self.server.port

    async def api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.server.port}/admin/api/{path}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            data: dict[str, Any] = await response.json()
            return data

    async def run(self) -> bool:
        start = time.monotonic()
        until = start + self.seconds
        await self.server.start()
        clients, victims = await self._drive(start, until, self._restart(start))
        await self.server.stop()
        return self._check(clients, victims)

    async def _drive(
        self, start: float, until: float, *faults: Awaitable[None]
    ) -> tuple[list[Client], list[Client]]:
        """Run every client and the victims until ``until``, with the progress
        samples, the operator and ``faults`` (the restarts) alongside."""
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as self.session:
            clients = [Client(i, self) for i in range(self.clients)]
            victims = [Client(self.clients + i, self, victim=True) for i in range(self.victims)]
            tasks = [asyncio.create_task(c.run(until)) for c in clients + victims]
            await asyncio.gather(
                self._progress(start, until), self._operator(victims, start), *faults
            )
            await asyncio.gather(*tasks, return_exceptions=True)
        return clients, victims

    async def _progress(self, start: float, until: float) -> None:
        while (now := time.monotonic()) < until:
            await asyncio.sleep(min(PROGRESS, until - now))
            with contextlib.suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
                self.samples.append(await self._sample(time.monotonic() - start))
            t, last = self.totals, self.samples[-1] if self.samples else None
            resources = (
                f"rss {last.rss_mib:.0f} MiB, fds {last.fds}, tasks {last.tasks}, "
                f"{last.connections} connected"
                if last
                else "no sample"
            )
            print(
                f"[{time.monotonic() - start:5.0f} s] sent {t.sent}, received {t.received}, "
                f"drops {t.drops}, resumes {t.resumes}, problems {len(t.problems)}; {resources}",
                flush=True,
            )

    async def _sample(self, at: float) -> Sample:
        stats = await self.api("GET", "stats")
        fds = len(os.listdir(f"/proc/{self.server.pid}/fd"))
        return Sample(at, stats["rss_bytes"] / 2**20, fds, stats["tasks"], stats["connections"])

    async def _operator(self, victims: list[Client], start: float) -> None:
        """Kick half the victims and ban the other half, spread over the first third."""
        await asyncio.sleep(min(20.0, self.seconds / 10))
        if not victims:
            return
        for number, victim in enumerate(victims):
            await asyncio.sleep(self.seconds / 3 / len(victims))
            with contextlib.suppress(aiohttp.ClientError, OSError):
                if number % 2:
                    await self.api("POST", "kick", {"name": victim.name, "reason": "soak"})
                else:
                    body = {"name": victim.name, "duration": "1h", "reason": "soak"}
                    await self.api("POST", "bans", body)

    async def _restart(self, start: float) -> None:
        await asyncio.sleep(self.seconds / 2)
        code = await self.server.stop()
        if code != 0:
            self.totals.problem(f"SIGTERM exit status {code}")
        await self.server.start()
        self.totals.restarts += 1
        self.restarted_at = time.monotonic() - start

    def _check(self, clients: list[Client], victims: list[Client]) -> bool:
        for victim in victims:
            wanted = 4500 if victim.index % 2 else 4501
            if victim.close_code != wanted:
                self.totals.problem(f"{victim.name}: closed {victim.close_code}, not {wanted}")
        silent = [c.name for c in clients if c.last_id <= 0]
        if silent:
            self.totals.problem(f"{len(silent)} client(s) saw no message: {silent[:5]}")
        # Gap-free up to the room's newest id: nothing acknowledged missed at the end.
        short = [
            f"{c.name} {c.last_id}/{max(self.order.get(c.room, {0: ''}))}"
            for c in clients
            if c.finished and c.last_id != max(self.order.get(c.room, {0: ""}))
        ]
        if short:
            self.totals.problem(f"{len(short)} client(s) missed the room's end: {short[:5]}")
        return not self.totals.problems and self._flat()

    def steady(self) -> list[Sample]:
        """Samples after the restart's warm-up (30 s), where flatness is judged."""
        return [s for s in self.samples if s.at > self.restarted_at + 30]

    def _flat(self, label: str = "") -> bool:
        """Judge self.steady(); ``label`` (a node) heads each problem found."""
        steady = self.steady()
        if len(steady) < 3:
            return True  # too short a run to judge
        first, last = steady[0], steady[-1]
        ok = True
        if last.rss_mib > first.rss_mib * 1.10 + 5:
            self.totals.problem(f"{label}RSS grew {first.rss_mib:.0f} -> {last.rss_mib:.0f} MiB")
            ok = False
        if last.fds > first.fds + 20:
            self.totals.problem(f"{label}open fds grew {first.fds} -> {last.fds}")
            ok = False
        if last.tasks > first.tasks + 50:
            self.totals.problem(f"{label}asyncio tasks grew {first.tasks} -> {last.tasks}")
            ok = False
        return ok


def document(soak: Soak, ok: bool, argv: list[str]) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    t = soak.totals
    lines = [
        "# Soak",
        "",
        f"Written by `python -m benchmarks.soak {' '.join(argv)}` (`make soak`); do not edit by "
        f"hand. Commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores (shared).",
        "",
        f"{soak.clients} chat.v1 clients in {ROOMS} rooms, one numbered message every "
        f"{POST_INTERVAL:g} s each, random disconnect-and-resume, {soak.victims} extra clients "
        f"kicked or banned through the API, SIGTERM and restart at {soak.seconds / 2:.0f} s.",
        "",
        f"**Result: {'PASS' if ok else 'FAIL'}.** Sent {t.sent:,}, received {t.received:,} "
        f"(room deliveries), {t.drops} random disconnects, {t.resumes:,} resumes, "
        f"{t.restarts} restart(s).",
        "",
        f"Observed, not judged: {t.early} new member(s) got as their first live message an "
        "id at or below the welcome's `last_ids` for the room (assigned before the join, "
        "delivered after it), so `last_ids` can name messages that still arrive live.",
        "",
    ]
    if t.problems:
        lines += ["Problems:", "", *(f"- {p}" for p in t.problems), ""]
    lines += [
        "Server resources every 10 s (the process after the restart from "
        f"{soak.restarted_at:.0f} s; flatness is judged from 30 s after it):",
        "",
        "| s | RSS MiB | open fds | asyncio tasks | connections |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {s.at:.0f} | {s.rss_mib:.1f} | {s.fds} | {s.tasks} | {s.connections} |"
            for s in soak.samples
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length (default 600)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="(default 500)")
    parser.add_argument("--victims", type=int, default=VICTIMS, help="to kick and ban (20)")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="two nodes on a private redis-server, restarted half way (writes SOAK-REDIS.md)",
    )
    parser.add_argument("--output", type=Path, help="(default SOAK.md or SOAK-REDIS.md)")
    args = parser.parse_args(argv)
    if args.redis:
        from . import soak_redis  # imports this module: not at the top

        soak: Soak = soak_redis.RedisSoak(args.seconds, args.clients, args.victims)
        default, write = soak_redis.DEFAULT_OUTPUT, soak_redis.document
    else:
        soak = Soak(args.seconds, args.clients, args.victims)
        default, write = DEFAULT_OUTPUT, document
    output = args.output or default
    try:
        ok = asyncio.run(soak.run())
    finally:
        soak.tmp.cleanup()
    shown = [] if argv is None else argv
    output.write_text(write(soak, ok, shown or sys.argv[1:]))
    if output == default:
        separate.refresh_results()
    print("PASS" if ok else "FAIL: " + "; ".join(soak.totals.problems[:5]), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

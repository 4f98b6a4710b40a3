"""The soak in Redis mode: ``python -m benchmarks.soak --redis`` (``make soak ARGS=--redis``).

The same clients and checks as the embedded soak (benchmarks/soak.py), on two
chatserver nodes sharing a private redis-server with an append-only file
fsynced on every write. Clients connect and resume on either node at random,
so a resume often lands on the other node; the operator kicks and bans
through either node's API, wherever the victim is. At 40 % node b gets
SIGTERM and is restarted; at 60 % Redis is stopped, left down for a few
seconds and started again on the same port and directory. Messages refused
with ``broker_unavailable`` meanwhile were never acknowledged: counted, not
owed to anyone. Every echoed message must reach everyone who stayed, in the
room's one order with gap-free ids. RSS, fds and tasks of both nodes are
judged flat from 30 s after the Redis restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from .persistent_redis import RedisServer
from .server import free_port
from .soak import POST_INTERVAL, ROOMS, TOKEN, Client, Sample, Server, Soak

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "SOAK-REDIS.md"
NODES = ("a", "b")
NODE_RESTART = 0.4  # when node b is SIGTERM-restarted, as a share of the run
REDIS_RESTART = 0.6  # when Redis is stopped
REDIS_OUTAGE = 5.0  # seconds Redis stays down (less in a short run)
KICK_PATIENCE = 30.0  # seconds the operator keeps trying one victim


class RedisSoak(Soak):
    def __init__(self, seconds: float, clients: int, victims: int) -> None:
        super().__init__(seconds, clients, victims)
        directory = Path(self.tmp.name) / "redis"
        directory.mkdir()
        self.redis = RedisServer(directory, persist=True)
        self.nodes = {
            name: Server(
                free_port(), self.tmp.name, ["--redis-url", self.redis.url, "--node-id", name]
            )
            for name in NODES
        }
        self.server = self.nodes[NODES[0]]
        self.ticks: list[tuple[float, dict[str, Sample]]] = []
        self.node_restarted_at = 0.0
        self.outage = 0.0  # seconds from stopping Redis to both nodes answering again

    def ws_port(self) -> int:
        return random.choice(list(self.nodes.values())).port

    async def api_on(self, node: str, method: str, path: str, body: Any = None) -> Any:
        """One admin API call to ``node``; its JSON answer."""
        url = f"http://127.0.0.1:{self.nodes[node].port}/admin/api/{path}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            return await response.json()

    async def run(self) -> bool:
        start = time.monotonic()
        until = start + self.seconds
        await self.redis.start()
        await asyncio.gather(*(node.start() for node in self.nodes.values()))
        clients, victims = await self._drive(
            start, until, self._restart_node(start), self._restart_redis(start)
        )
        for name, node in self.nodes.items():
            if code := await node.stop():
                self.totals.problem(f"node {name}: SIGTERM exit status {code} at the end")
        await self.redis.stop()
        return self._check(clients, victims)

    async def _progress(self, start: float, until: float) -> None:
        while (now := time.monotonic()) < until:
            await asyncio.sleep(min(10.0, until - now))
            at = time.monotonic() - start
            samples = {}
            for name in self.nodes:
                with contextlib.suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
                    samples[name] = await asyncio.wait_for(self._sample_node(name, at), 8)
            self.ticks.append((at, samples))
            t = self.totals
            nodes = "; ".join(
                f"{name}: rss {s.rss_mib:.0f} MiB, fds {s.fds}, tasks {s.tasks}, "
                f"{s.connections} connected"
                if (s := samples.get(name))
                else f"{name}: no sample"
                for name in self.nodes
            )
            print(
                f"[{at:5.0f} s] sent {t.sent}, acked {t.acked}, received {t.received}, "
                f"broker_unavailable {t.errors.get('broker_unavailable', 0)}, drops {t.drops}, "
                f"resumes {t.resumes}, problems {len(t.problems)}; {nodes}",
                flush=True,
            )

    async def _sample_node(self, name: str, at: float) -> Sample:
        node = self.nodes[name]
        url = f"http://127.0.0.1:{node.port}/admin/api/stats"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.get(url, headers=headers) as response:
            stats: dict[str, Any] = await response.json()
        fds = len(os.listdir(f"/proc/{node.pid}/fd"))
        # The top-level figures are this node's own (cluster sums are under "cluster").
        return Sample(at, stats["rss_bytes"] / 2**20, fds, stats["tasks"], stats["connections"])

    async def _operator(self, victims: list[Client], start: float) -> None:
        """Kick half the victims and ban the other half, each through a random node's API.

        A victim may be between connections (its node restarting, a resume in
        flight): the operator waits until it is connected and tries again until
        it is closed, as a person at the dashboard would.
        """
        await asyncio.sleep(min(20.0, self.seconds / 10))
        if not victims:
            return
        end = start + self.seconds
        for number, victim in enumerate(victims):
            await asyncio.sleep(self.seconds / 3 / len(victims))
            give_up = min(time.monotonic() + KICK_PATIENCE, end)
            while victim.close_code not in {4500, 4501} and time.monotonic() < give_up:
                if victim.ws is not None:
                    with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                        await self._moderate(victim, random.choice(NODES), ban=number % 2 == 0)
                await asyncio.sleep(0.5)

    async def _moderate(self, victim: Client, node: str, *, ban: bool) -> None:
        """Ban by name; kick by connection id, found in the cluster-wide list.

        (``POST kick`` with a ``name`` finds only connections on the node asked,
        so the kick goes by the id that ``GET connections`` shows, as the
        dashboard's kick button does; the id may be a few seconds stale.)
        """
        if ban:
            body = {"name": victim.name, "duration": "1h", "reason": "soak"}
            await self.api_on(node, "POST", "bans", body)
            return
        page = await self.api_on(node, "GET", f"connections?name={victim.name}")
        for row in page.get("connections", []):
            if row["name"] == victim.name:
                path = f"connections/{row['id']}/kick"
                await self.api_on(node, "POST", path, {"reason": "soak"})

    async def _restart_node(self, start: float) -> None:
        await asyncio.sleep(self.seconds * NODE_RESTART)
        node = self.nodes[NODES[-1]]
        if code := await node.stop():
            self.totals.problem(f"node {NODES[-1]}: SIGTERM exit status {code}")
        await node.start()
        self.totals.restarts += 1
        self.node_restarted_at = time.monotonic() - start

    async def _restart_redis(self, start: float) -> None:
        await asyncio.sleep(self.seconds * REDIS_RESTART)
        stopped = time.monotonic()
        await self.redis.stop()
        await asyncio.sleep(min(REDIS_OUTAGE, self.seconds / 20))
        await self.redis.start()
        self.restarted_at = time.monotonic() - start  # flatness is judged from here + 30 s
        self.totals.restarts += 1
        for _ in range(300):  # at most a minute: a node that stays unhealthy fails below
            if await self._all_healthy():
                self.outage = time.monotonic() - stopped
                return
            await asyncio.sleep(0.2)
        self.totals.problem("a node was not healthy a minute after Redis came back")

    async def _all_healthy(self) -> bool:
        for node in self.nodes.values():
            with contextlib.suppress(aiohttp.ClientError, OSError):
                url = f"http://127.0.0.1:{node.port}/healthz"
                async with self.session.get(url) as response:
                    if response.status == 200:
                        continue
            return False
        return True

    def _flat(self, label: str = "") -> bool:
        """Each node's RSS flat; open fds and tasks flat summed over the nodes.

        A node's fds and tasks follow its connections, and those drift from one
        node to the other as clients resume at random (most of node b's went to
        a while b restarted); their sum over the nodes stays put unless
        something leaks.
        """
        ok = True
        for name in self.nodes:
            steady = [s[name] for at, s in self.ticks if name in s and at > self.restarted_at + 30]
            if len(steady) >= 3 and steady[-1].rss_mib > steady[0].rss_mib * 1.10 + 5:
                first, last = steady[0].rss_mib, steady[-1].rss_mib
                self.totals.problem(f"node {name}: RSS grew {first:.0f} -> {last:.0f} MiB")
                ok = False
        self.samples = [
            Sample(
                at,
                sum(s.rss_mib for s in samples.values()),
                sum(s.fds for s in samples.values()),
                sum(s.tasks for s in samples.values()),
                sum(s.connections for s in samples.values()),
            )
            for at, samples in self.ticks
            if len(samples) == len(self.nodes)
        ]
        return super()._flat("both nodes: ") and ok


def document(soak: Soak, ok: bool, argv: list[str]) -> str:
    assert isinstance(soak, RedisSoak)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    t = soak.totals
    errors = ", ".join(f"{n:,} `{code}`" for code, n in sorted(t.errors.items())) or "none"
    lines = [
        "# Soak, Redis mode",
        "",
        f"Written by `python -m benchmarks.soak {' '.join(argv)}` (`make soak ARGS=--redis`); do "
        f"not edit by hand. Commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores (shared by the soak, both nodes and Redis).",
        "",
        f"{soak.clients} chat.v1 clients in {ROOMS} rooms on two nodes (`--node-id a`, `b`) "
        "sharing one private `redis-server` (`appendonly yes`, `appendfsync always`); "
        f"one numbered message every {POST_INTERVAL:g} s each; every connect and resume goes "
        f"to a node at random; random disconnect-and-resume; {soak.victims} extra clients "
        "kicked or banned through a random node's API; node b SIGTERM-restarted at "
        f"{soak.node_restarted_at:.0f} s; Redis stopped at {soak.seconds * REDIS_RESTART:.0f} s "
        f"and started again on the same port and directory (both nodes healthy again "
        f"{soak.outage:.1f} s after the stop).",
        "",
        f"**Result: {'PASS' if ok else 'FAIL'}.** Sent {t.sent:,}, acknowledged (echoed) "
        f"{t.acked:,}, received {t.received:,} (room deliveries), {t.drops} random disconnects, "
        f"{t.resumes:,} resumes, {t.restarts} restart(s). Errors (not acknowledged, so owed "
        f"to no one): {errors}. Checked: every client that stayed saw its room's ids once "
        "each, in order, gap-free up to the room's newest, each id the same message for "
        "everyone; every resume lost nothing and kept its session and epoch; kicks got 4500 "
        "and bans 4501.",
        "",
    ]
    if t.problems:
        lines += ["Problems:", "", *(f"- {p}" for p in t.problems), ""]
    header = " | ".join(f"{n} RSS MiB | {n} fds | {n} tasks | {n} conns" for n in soak.nodes)
    lines += [
        "Both nodes' resources every 10 s; a blank is a node that did not answer. Judged from "
        f"30 s after Redis came back at {soak.restarted_at:.0f} s: each node's RSS, and open "
        "fds and tasks summed over both nodes (each node's follow its connections, which "
        "drift between the nodes as clients resume on either):",
        "",
        f"| s | {header} |",
        "| ---: |" + " ---: |" * (4 * len(soak.nodes)),
    ]
    for at, samples in soak.ticks:
        cells = [
            f"{s.rss_mib:.1f} | {s.fds} | {s.tasks} | {s.connections}"
            if (s := samples.get(name))
            else " | | | "
            for name in soak.nodes
        ]
        lines.append(f"| {at:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

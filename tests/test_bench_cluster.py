"""Smoke tests of the cluster benchmark (scenario 7) on the parts that run today.

A private ``redis-server``, clients spread over nodes, python-socketio's own
two-node cluster and our embedded baseline, all real processes. Our Redis
mode is not in this tree yet, so only the command its nodes get is checked.
Without ``redis-server`` the Redis tests skip, and fail with
``CHAT_REQUIRE_REDIS=1``.
"""

import asyncio
import os
from collections.abc import Awaitable
from typing import TypeVar

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from benchmarks.cluster import (
    ClusterLoad,
    ClusterResult,
    ours_embedded,
    ours_node,
    ours_redis,
    receiver_specs,
    run_background,
    run_cluster,
    socketio_redis,
)
from benchmarks.cluster_scenario import ClusterRuns, quick_plan, render_cluster
from benchmarks.redis_server import calls_between, redis_missing, running_redis
from benchmarks.scenarios import Runs

T = TypeVar("T")
RUN_TIMEOUT = 120.0
SMALL = ClusterLoad(
    members=20,
    senders=2,
    window=8,
    duration=2.0,
    connect_timeout=20.0,
    warmup_timeout=20.0,
    drain_timeout=10.0,
)


@pytest.fixture
def redis_server_binary() -> None:
    """Skip (or fail, with CHAT_REQUIRE_REDIS=1) when redis-server is not installed."""
    reason = redis_missing()
    if reason is not None:
        if os.environ.get("CHAT_REQUIRE_REDIS") == "1":
            pytest.fail(f"CHAT_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)


def bounded(work: Awaitable[T]) -> T:
    """Run ``work`` on uvloop, as the benchmarks do, failing if it hangs."""

    async def within() -> T:
        async with asyncio.timeout(RUN_TIMEOUT):
            return await work

    return uvloop.run(within())


async def private_redis_roundtrip() -> tuple[int, dict[str, int], dict[str, str]]:
    """Start a private Redis, send two commands, read the counters, stop it."""
    async with running_redis() as redis:
        port = redis.process.port
        before = await redis.command_calls()
        await redis.client.publish("room", "hello")
        await redis.client.set("key", "value")
        after = await redis.command_calls()
        config = {
            name: str((await redis.client.config_get(name))[name])
            for name in ("save", "appendonly")
        }
    return port, calls_between(before, after), config


async def redis_refuses(port: int) -> bool:
    """Whether nothing answers on ``port`` any more."""
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=2.0)
    try:
        await client.ping()
    except RedisConnectionError:
        return True
    finally:
        await client.aclose()
    return False


@pytest.mark.usefixtures("redis_server_binary")
def test_private_redis_counts_the_commands_between_two_readings_and_stops_after() -> None:
    """Own port, no persistence; commandstats counts PUBLISH and SET, not our INFO."""
    port, calls, config = uvloop.run(private_redis_roundtrip())
    assert port != 6379
    assert calls == {"publish": 1, "set": 1}
    assert config == {"save": "", "appendonly": "no"}
    assert uvloop.run(redis_refuses(port))


@pytest.mark.usefixtures("redis_server_binary")
def test_socketio_cluster_delivers_every_message_to_the_clients_of_both_nodes() -> None:
    """Two socketio nodes on one Redis: none lost, half the deliveries each, a PUBLISH a message."""
    result = bounded(run_cluster(socketio_redis(2), SMALL))
    receivers = SMALL.members - SMALL.senders
    assert result.messages > 0
    assert result.receivers == receivers
    assert result.lost == 0
    assert result.node_deliveries == (result.messages * receivers // 2,) * 2
    assert result.redis_calls.get("publish") == result.messages
    assert all(cpu > 0 for cpu in result.node_cpu_s)
    assert result.redis_cpu_s > 0


@pytest.mark.usefixtures("redis_server_binary")
def test_silent_socketio_room_costs_no_redis_commands() -> None:
    """Connected but posting nothing: the counter window sees no PUBLISH from either node."""
    quiet = bounded(run_background(socketio_redis(2), SMALL, 1.0))
    assert quiet.members == SMALL.members
    assert "publish" not in quiet.calls
    assert quiet.window_s == 1.0


def test_embedded_server_through_the_cluster_runner_at_a_fixed_rate() -> None:
    """The baseline at light load: every message to every receiver, in order, timed."""
    load = ClusterLoad(
        members=12, senders=2, rate=20.0, duration=1.0, connect_timeout=20.0, warmup_timeout=20.0
    )
    result = bounded(run_cluster(ours_embedded(), load))
    assert 15 <= result.messages <= 25
    assert result.deliveries == result.messages * 10
    assert (result.lost, result.reordered) == (0, 0)
    assert result.redis_calls == {}
    assert result.redis_cpu_s == 0.0
    assert 0 < result.latency.p50_us <= result.latency.max_us


def test_our_redis_nodes_get_the_url_and_are_spread_round_robin() -> None:
    """Each node of ours: --redis-url and its own SQLite file; receivers alternate between nodes."""
    url = "redis://127.0.0.1:7000/0"
    argv = ours_node(url).command.for_run(9000, "/tmp/node1")
    assert argv[argv.index("--redis-url") + 1] == url
    assert argv[argv.index("--db") + 1] == "/tmp/node1/chat.db"
    assert argv[argv.index("--port") + 1] == "9000"
    assert ours_redis(3).nodes == 3
    assert ours_redis(3).redis
    ports = [specs.port for specs in receiver_specs(ClusterLoad(members=8, senders=2), [1, 2, 3])]
    assert ports == [1, 2, 3, 1, 2, 3]


def test_section_says_not_measured_when_our_redis_mode_does_not_start() -> None:
    """No MET or MISSED for targets whose runs could not happen: NOT MEASURED, with the reason."""
    peer: Runs[ClusterResult] = Runs()
    reason = "chatserver: Redis mode is not implemented"
    runs = ClusterRuns(
        throughput=Runs(),
        equal=Runs(),
        small=Runs(),
        light=peer,
        background=Runs(),
        ours_missing=reason,
        redis_missing=None,
    )
    section = render_cluster(quick_plan(), runs)
    assert "Redis mode is not implemented" in section
    assert "MISSED" not in section
    assert "MET" not in section.replace("NOT MEASURED", "")
    assert section.count("NOT MEASURED") == 6

"""Smoke test of the benchmark load generator (benchmarks/) against our server."""

import asyncio

import uvloop

from benchmarks.loadgen import FanoutConfig, FanoutResult, run_fanout
from benchmarks.targets import ours

MESSAGES = 300
CLIENTS = 20  # one of them is the sender
RUN_TIMEOUT = 120.0


async def bounded_fanout(config: FanoutConfig) -> FanoutResult:
    """Run the fan-out load on a fresh server subprocess, failing fast if it hangs."""
    async with asyncio.timeout(RUN_TIMEOUT):
        return await run_fanout(ours(), config)


def test_load_generator_delivers_every_message_once_and_in_order() -> None:
    """300 messages to 19 receivers through a real server: all counted, none lost or reordered."""
    config = FanoutConfig(
        clients=CLIENTS,
        window=16,
        messages=MESSAGES,
        duration=30.0,
        workers=2,  # as the full runs: receivers split over workers, acks merged
        connect_timeout=20.0,
        warmup_timeout=20.0,
        drain_timeout=10.0,
    )
    result = uvloop.run(bounded_fanout(config))
    assert result.messages == MESSAGES
    assert result.drained
    assert (result.receivers, result.slow, result.disconnected) == (CLIENTS - 1, 0, 0)
    # The receivers' own count, against what the window saw acknowledged.
    assert result.deliveries == MESSAGES * (CLIENTS - 1)
    assert result.reordered == 0
    assert 0 < result.latency.p50_us <= result.latency.max_us

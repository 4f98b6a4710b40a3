"""The in-memory login limiter of the embedded mode: per name, per address, forgetting."""

from __future__ import annotations

import asyncio

from chatserver.accounts import ADDRESS_FACTOR, LoginLimiter


async def test_a_name_is_limited_after_its_failures_and_freed_by_a_success() -> None:
    """`limit` failures block the name (from any address) until a success clears it."""
    limiter = LoginLimiter(3)
    for _ in range(3):
        assert await limiter.retry_after("Alice", "10.0.0.1") == 0
        await limiter.failed("Alice", "10.0.0.1")
    assert await limiter.retry_after("alice", "10.0.0.2") > 0
    await limiter.succeeded("ALICE")
    assert await limiter.retry_after("alice", "10.0.0.2") == 0


async def test_an_address_is_limited_across_names() -> None:
    """One address guessing many names is stopped at ADDRESS_FACTOR times the limit."""
    limiter = LoginLimiter(2)
    for index in range(2 * ADDRESS_FACTOR):
        await limiter.failed(f"name{index}", "10.0.0.9")
    assert await limiter.retry_after("fresh", "10.0.0.9") > 0
    assert await limiter.retry_after("fresh", "10.0.0.10") == 0


async def test_failures_leave_the_window() -> None:
    """After the window a name may try again; 0 turns the limit off."""
    limiter = LoginLimiter(1, window=0.2)
    await limiter.failed("bob", "10.0.0.1")
    assert await limiter.retry_after("bob", "10.0.0.1") > 0
    await asyncio.sleep(0.3)
    assert await limiter.retry_after("bob", "10.0.0.1") == 0
    unlimited = LoginLimiter(0)
    await unlimited.failed("bob", "10.0.0.1")
    assert await unlimited.retry_after("bob", "10.0.0.1") == 0

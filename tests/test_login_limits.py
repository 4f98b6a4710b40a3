"""The in-memory login limiter of the embedded mode: per name, per address, forgetting."""

from __future__ import annotations

import asyncio

from chatserver.accounts import ADDRESS_FACTOR, LoginLimiter


async def test_a_name_is_limited_after_its_attempts_and_freed_by_a_success() -> None:
    """`limit` attempts block the name (from any address) until a success clears it."""
    limiter = LoginLimiter(3)
    for _ in range(3):
        assert await limiter.reserve("Alice", "10.0.0.1") == 0
    assert await limiter.reserve("alice", "10.0.0.2") > 0
    await limiter.succeeded("ALICE", "10.0.0.1")
    assert await limiter.reserve("alice", "10.0.0.2") == 0


async def test_parallel_attempts_are_all_counted() -> None:
    """Attempts reserved together, before any result, still stop at the limit."""
    limiter = LoginLimiter(5)
    waits = await asyncio.gather(*(limiter.reserve("bob", "10.0.0.1") for _ in range(20)))
    assert sum(1 for wait in waits if wait == 0) == 5


async def test_an_address_is_limited_across_names_and_gets_successes_back() -> None:
    """One address guessing many names is stopped at ADDRESS_FACTOR times the
    limit; an attempt that succeeded is given back to the address."""
    limiter = LoginLimiter(2)
    for index in range(2 * ADDRESS_FACTOR - 1):
        assert await limiter.reserve(f"name{index}", "10.0.0.9") == 0
    assert await limiter.reserve("right", "10.0.0.9") == 0
    await limiter.succeeded("right", "10.0.0.9")
    assert await limiter.reserve("last", "10.0.0.9") == 0
    assert await limiter.reserve("fresh", "10.0.0.9") > 0
    assert await limiter.reserve("fresh", "10.0.0.10") == 0


async def test_attempts_leave_the_window() -> None:
    """After the window a name may try again; 0 turns the limit off."""
    limiter = LoginLimiter(1, window=0.2)
    assert await limiter.reserve("bob", "10.0.0.1") == 0
    assert await limiter.reserve("bob", "10.0.0.1") > 0
    await asyncio.sleep(0.3)
    assert await limiter.reserve("bob", "10.0.0.1") == 0
    unlimited = LoginLimiter(0)
    for _ in range(3):
        assert await unlimited.reserve("bob", "10.0.0.1") == 0

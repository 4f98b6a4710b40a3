"""Fan-out: one slow client cannot stall the others."""

from __future__ import annotations

import asyncio

from chatserver.hub import Hub
from chatserver.keys import HUB
from tests.conftest import ChatServer, Connect, Peer, RawPeer

# 8 MB per reader: more than the kernel's socket buffers (up to ~4 MB each way) absorb.
MESSAGES = 8000
WINDOW = 100
PADDING = "x" * 1000


def hub_of(chat: ChatServer) -> Hub:
    assert chat.app is not None
    return chat.app[HUB]


async def read_messages(peer: Peer, count: int) -> list[str]:
    """Collect the text of ``count`` chat messages from a JSON peer."""
    texts: list[str] = []
    while len(texts) < count:
        event = await peer.until_type("message", timeout=20)
        texts.append(event["text"])
    return texts


async def send_windowed(sender: Peer) -> list[str]:
    """Send MESSAGES with at most WINDOW in flight (closed loop), reading own echoes."""
    echoed: list[str] = []
    for start in range(0, MESSAGES, WINDOW):
        for i in range(start, start + WINDOW):
            await sender.send_json(type="message", text=f"{i} {PADDING}")
        echoed += await read_messages(sender, WINDOW)
    return echoed


async def test_never_reading_client_is_closed_4000_and_others_get_everything(
    chat: ChatServer, connect: Connect
) -> None:
    """A client that never reads is closed with 4000; the rest receive all, in order."""
    await chat.stop()
    # A long close timeout: the stalled peer reads its backlog through a 4 KiB
    # window from a thread, which can take longer than the tests' default 3 s.
    await chat.start(outbound_buffer_bytes=512 * 1024, shutdown_timeout=30)
    readers = [await connect(json=True) for _ in range(3)]
    slow = await asyncio.to_thread(RawPeer, chat.settings.port)
    sender = await connect(json=True)
    await sender.until_type("welcome")
    hub = hub_of(chat)

    async def slow_close_code() -> int | None:
        # Read only once the server has given up on it, within the close timeout
        # (after which a peer that still does not read is aborted).
        async with asyncio.timeout(30):  # a regression fails here instead of hanging
            while 4 in hub.users:  # noqa: ASYNC110 (polling server state from a test)
                await asyncio.sleep(0.02)
        return await asyncio.to_thread(slow.close_code)

    code, *results = await asyncio.gather(
        slow_close_code(),
        send_windowed(sender),
        *(read_messages(peer, MESSAGES) for peer in readers),
    )
    slow.close()
    assert code == 4000
    expected = [f"{i} {PADDING}" for i in range(MESSAGES)]
    for texts in results:
        assert texts == expected
    live = sorted(conn.user.id for conn in hub.connections.values())
    assert live == [1, 2, 3, 5], "only the slow client (user 4) should be gone"

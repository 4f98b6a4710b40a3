"""Seed-style chat server: ``websockets``, a dict of clients, a serial send loop.

Every line is awaited client after client, so one slow reader stalls the whole
room: this is the behaviour ``docs/topics/broadcast.rst`` of websockets warns
about and the baseline our fan-out is measured against.
"""

import contextlib
import itertools

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.peers.cli import announce, parse_args, run, wait_for_stop


class SerialChat:
    """One room; every event is sent to each client in turn."""

    def __init__(self) -> None:
        self.clients: dict[ServerConnection, int] = {}
        self.ids = itertools.count(1)

    async def broadcast(self, line: str) -> None:
        """Send ``line`` to every client, waiting for each send in turn."""
        # Copy: clients may leave while we await a send.
        for ws in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(line)

    async def handler(self, ws: ServerConnection) -> None:
        """Register a client, relay its lines, announce its arrival and exit."""
        user = next(self.ids)
        self.clients[ws] = user
        try:
            await self.broadcast(f"User {user} has connected.")
            async for message in ws:
                await self.broadcast(f"User {user}: {message!s}")
        finally:
            del self.clients[ws]
            await self.broadcast(f"User {user} has disconnected.")


async def serve_chat(host: str, port: int) -> None:
    """Serve until SIGTERM."""
    chat = SerialChat()
    async with serve(chat.handler, host, port):
        announce(host, port)
        await wait_for_stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m benchmarks.peers.seed_serial --port N``."""
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", argv)
    run(lambda: serve_chat(args.host, args.port), args.uvloop)


if __name__ == "__main__":
    main()

"""Seed-style chat server fanning out with ``websockets.broadcast()``.

``broadcast()`` writes each frame to every connection without waiting, so a
slow reader no longer stalls the room, but its buffer grows without bound.
"""

import itertools

from websockets.asyncio.server import ServerConnection, broadcast, serve

from benchmarks.peers.cli import announce, parse_args, run, wait_for_stop


class BroadcastChat:
    """One room; every event goes out through ``websockets.broadcast()``."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.ids = itertools.count(1)

    async def handler(self, ws: ServerConnection) -> None:
        """Register a client, relay its lines, announce its arrival and exit."""
        user = next(self.ids)
        self.clients.add(ws)
        try:
            broadcast(self.clients, f"User {user} has connected.")
            async for message in ws:
                broadcast(self.clients, f"User {user}: {message!s}")
        finally:
            self.clients.discard(ws)
            broadcast(self.clients, f"User {user} has disconnected.")


async def serve_chat(host: str, port: int) -> None:
    """Serve until SIGTERM."""
    chat = BroadcastChat()
    async with serve(chat.handler, host, port):
        announce(host, port)
        await wait_for_stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m benchmarks.peers.ws_broadcast --port N``."""
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", argv)
    run(lambda: serve_chat(args.host, args.port), args.uvloop)


if __name__ == "__main__":
    main()

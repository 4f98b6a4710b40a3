"""Length-prefixed pickled messages between the coordinator and its workers.

Both ends are processes of this package started by the coordinator over a
socketpair, so unpickling trusts its input.
"""

import asyncio
import contextlib
import pickle
import socket

HEADER = 4


class Channel:
    """One end of a socketpair carrying whole Python objects."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> "Channel":
        """Wrap a connected socket."""
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: object) -> None:
        """Queue ``message``; the transport writes it without blocking the caller."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(len(data).to_bytes(HEADER, "big") + data)

    async def recv(self) -> object:
        """Return the next message; raise ``asyncio.IncompleteReadError`` at EOF."""
        size = int.from_bytes(await self.reader.readexactly(HEADER), "big")
        return pickle.loads(await self.reader.readexactly(size))

    async def close(self) -> None:
        """Close the socket, ignoring a peer that already went away."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

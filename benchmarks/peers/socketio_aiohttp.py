"""python-socketio ``AsyncServer`` on aiohttp re-emitting ``message`` to all.

This is what a team reaching for Socket.IO would write; the load generator
speaks Engine.IO v4 / Socket.IO v5 over a plain WebSocket to reach it.
"""

from typing import Any

import socketio
from aiohttp import web

from benchmarks.peers.cli import announce, parse_args, run, wait_for_stop


def create_app() -> web.Application:
    """Build the aiohttp app with the Socket.IO server attached."""
    sio = socketio.AsyncServer(async_mode="aiohttp")

    async def on_message(sid: str, data: Any) -> None:
        await sio.emit("message", data)

    sio.on("message", on_message)
    app = web.Application()
    sio.attach(app)
    return app


async def serve_chat(host: str, port: int) -> None:
    """Serve until SIGTERM."""
    runner = web.AppRunner(create_app())
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        announce(host, port)
        await wait_for_stop()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m benchmarks.peers.socketio_aiohttp --port N``."""
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", argv)
    run(lambda: serve_chat(args.host, args.port), args.uvloop)


if __name__ == "__main__":
    main()

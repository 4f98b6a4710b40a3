"""python-socketio ``AsyncServer`` on aiohttp re-emitting ``message`` to all.

This is what a team reaching for Socket.IO would write; the load generator
speaks Engine.IO v4 / Socket.IO v5 over a plain WebSocket to reach it. With
``--redis-url`` several of these act as one server through python-socketio's
own ``AsyncRedisManager`` (Redis pub/sub), which is how its documentation
says to run more than one process.
"""

from typing import Any

import socketio
from aiohttp import web

from benchmarks.peers.cli import announce, make_parser, run, wait_for_stop

SHUTDOWN_TIMEOUT = 1.0


def create_app(redis_url: str | None = None) -> web.Application:
    """Build the aiohttp app with the Socket.IO server attached."""
    if redis_url:
        manager = socketio.AsyncRedisManager(redis_url)
        sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    else:
        sio = socketio.AsyncServer(async_mode="aiohttp")

    async def on_message(sid: str, data: Any) -> None:
        await sio.emit("message", data)

    sio.on("message", on_message)
    app = web.Application()
    sio.attach(app)
    return app


async def serve_chat(host: str, port: int, redis_url: str | None) -> None:
    """Serve until SIGTERM."""
    # Engine.IO's WebSocket handlers do not end at shutdown: without a short
    # timeout aiohttp waits for them until the launcher kills the peer.
    runner = web.AppRunner(create_app(redis_url), shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        announce(host, port)
        await wait_for_stop()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m benchmarks.peers.socketio_aiohttp --port N``."""
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument(
        "--redis-url", help="share events with the other nodes on this Redis (AsyncRedisManager)"
    )
    args = parser.parse_args(argv)
    run(lambda: serve_chat(args.host, args.port, args.redis_url), args.uvloop)


if __name__ == "__main__":
    main()

"""Command line shared by the peers: arguments, ready line, event loop choice."""

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

READY_FORMAT = "Server started on ws://{host}:{port}"


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``--host``, ``--port`` and ``--uvloop``."""
    return make_parser(description).parse_args(argv)


def make_parser(description: str) -> argparse.ArgumentParser:
    """The parser of :func:`parse_args`, for a peer that takes more options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run on uvloop (default: the stock asyncio loop, as the seed did)",
    )
    return parser


def announce(host: str, port: int) -> None:
    """Print the ready line the launcher waits for."""
    # flush: stdout is a pipe, so it is block-buffered by default.
    print(READY_FORMAT.format(host=host, port=port), flush=True)


async def wait_for_stop() -> None:
    """Return on SIGTERM or SIGINT so the peer can close its sockets."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def run(main: Callable[[], Awaitable[None]], use_uvloop: bool) -> None:
    """Run ``main`` on the chosen event loop."""

    async def wrapper() -> None:
        await main()

    if use_uvloop:
        import uvloop

        uvloop.run(wrapper())
    else:
        asyncio.run(wrapper())

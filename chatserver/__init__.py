"""A real-time WebSocket chat server on aiohttp."""

__version__ = "0.1.0"

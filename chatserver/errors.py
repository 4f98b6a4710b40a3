"""Exceptions of the chat server.

All of them derive from :class:`ChatError`::

    ChatError
    ├── SettingsError        a setting has a bad value (fatal at start)
    ├── StartupError         the server cannot start (its database is in use)
    └── CommandError         a client command cannot be applied; carries the
        │                    wire error ``code`` and is turned into an
        │                    ``error`` event at the connection's edge
        └── Unavailable      a backend (the store, the broker) cannot do its
            │                part now; the command was not applied
            └── Busy         this node has too many password hashes queued
                             (code ``busy``): try again in a few seconds

Nothing here knows about HTTP or WebSocket frames: the edge (``ws.py``,
``dashboard/``) translates them.
"""

from __future__ import annotations


class ChatError(Exception):
    """Root of the chat server's exceptions."""


class SettingsError(ChatError):
    """A setting has an invalid value."""


class StartupError(ChatError):
    """The server cannot start with these settings on this machine."""


class CommandError(ChatError):
    """A client command was refused; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Unavailable(CommandError):
    """A backend cannot take the command now (disk full, Redis down)."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}_unavailable", message)
        self.component = component


class Busy(Unavailable):
    """Too many password hashes are waiting on this node; the command was not applied."""

    def __init__(self, message: str) -> None:
        super().__init__("passwords", message)
        self.code = "busy"

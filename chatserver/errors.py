"""Exceptions of the chat server.

All of them derive from :class:`ChatError`::

    ChatError
    ├── SettingsError        a setting has a bad value (fatal at start)
    └── CommandError         a client command cannot be applied; carries the
                             wire error ``code`` and is turned into an
                             ``error`` event at the connection's edge

Nothing here knows about HTTP or WebSocket frames: the edge (``ws.py``,
``dashboard/``) translates them.
"""

from __future__ import annotations


class ChatError(Exception):
    """Root of the chat server's exceptions."""


class SettingsError(ChatError):
    """A setting has an invalid value."""


class CommandError(ChatError):
    """A client command was refused; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

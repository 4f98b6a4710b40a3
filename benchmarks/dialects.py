"""How each target is spoken to: URL, message framing, handshake chatter.

The text dialect (our server, seed peers) sends the payload as the frame and
receives it inside a line. The Socket.IO dialect wraps it in an event over
Engine.IO v4, which needs a namespace connect and ping answers.
"""

import enum
import urllib.parse


class Dialect(enum.Enum):
    """Wire dialect of a target server."""

    TEXT = "text"
    SOCKETIO = "socketio"


def url_for(dialect: Dialect, host: str, port: int, room: str | None = None) -> str:
    """Return the WebSocket URL a client of ``dialect`` connects to.

    ``room`` is our server's query parameter; the seed-style peers ignore it.
    """
    if dialect is Dialect.SOCKETIO:
        return f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket"
    query = f"?{urllib.parse.urlencode({'room': room})}" if room else ""
    return f"ws://{host}:{port}/{query}"


def frame_for(dialect: Dialect, payload: bytes) -> bytes:
    """Return the text frame that posts ``payload`` as a chat message."""
    if dialect is Dialect.SOCKETIO:
        return b'42["message","' + payload + b'"]'
    return payload


class Reply(enum.Enum):
    """What a client must do about a frame that carries no benchmark payload."""

    NOTHING = enum.auto()
    READY = enum.auto()
    SEND_NAMESPACE_CONNECT = enum.auto()
    SEND_PONG = enum.auto()


def classify(dialect: Dialect, data: bytes, ready: bool) -> Reply:
    """Classify a frame without a payload marker.

    Text: the first line (welcome or our own join line) means the server
    has registered us. Socket.IO: ``0{..}`` is the Engine.IO open packet,
    ``40..`` the namespace connect acknowledgement, ``2`` an Engine.IO ping.
    """
    if dialect is Dialect.TEXT:
        return Reply.NOTHING if ready else Reply.READY
    if data == b"2":
        return Reply.SEND_PONG
    if data.startswith(b"40"):
        return Reply.READY
    if data.startswith(b"0"):
        return Reply.SEND_NAMESPACE_CONNECT
    return Reply.NOTHING


ENGINEIO_PONG = b"3"
SOCKETIO_CONNECT = b"40"

"""The broker: everything that crosses nodes and is not a stored message.

Presence events (join, leave), nick changes and system announcements go to
every node's hub through :meth:`Broker.publish`; control commands (kick a
connection, a session taken over elsewhere, moderation changed) go to one node
or to all through :meth:`Broker.control`. Stored messages travel through the
room log instead, which keeps their order and ids.

Publishing never awaits: an implementation that needs the network queues the
publication and sends it in order. :class:`MemoryBroker` is the embedded
implementation (one process: a plain call); the Redis one lives in
``redis_engine.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from .protocol import Event


class Control(msgspec.Struct, tag_field="op", frozen=True):
    """A command from one node to the hub of another (or of every) node."""


class KickConnection(Control, tag="kick", frozen=True):
    """Close connection ``conn_id`` (kicked 4500 or banned 4501)."""

    conn_id: int
    code: int
    reason: str
    detail: str


class TakeOver(Control, tag="takeover", frozen=True):
    """``user_id``'s session now belongs to ``conn_id``: close any other holder (4001)."""

    user_id: int
    conn_id: int


class ModerationChanged(Control, tag="moderation", frozen=True):
    """Bans or mutes changed: reload them, enforce new bans, tell muted users."""

    what: str  # "bans" or "mutes"
    notice_user: int | None = None  # a user to tell (muted / unmuted)
    notice_name: str | None = None
    notice: str = ""


class CloseUser(Control, tag="close_user", frozen=True):
    """Close user ``user_id``'s connection wherever it is (an account locked or reset)."""

    user_id: int
    code: int
    reason: str


AnyControl = KickConnection | TakeOver | ModerationChanged | CloseUser

Deliver = Callable[[Event], None]
OnControl = Callable[[AnyControl], None]


class Broker(Protocol):
    """Cross-node events and control."""

    node: str

    def subscribe(self, deliver: Deliver, on_control: OnControl) -> None:
        """Where this node's incoming events and control commands go."""

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every node's hub, this one included."""

    def control(self, command: AnyControl, node: str | None = None) -> None:
        """Send ``command`` to ``node`` (None: every node, this one included)."""

    def track(self, room: str, epoch: str, last: int) -> None:
        """A local member is in ``room``, whose log stands at ``last``: deliver
        every message after it (a broker that can lose publications fills gaps)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class MemoryBroker:
    """Single-process broker: delivery is a synchronous local call."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._deliver: Deliver = _nowhere
        self._on_control: OnControl = _nowhere

    def subscribe(self, deliver: Deliver, on_control: OnControl) -> None:
        self._deliver, self._on_control = deliver, on_control

    def publish(self, event: Event) -> None:
        self._deliver(event)

    def control(self, command: AnyControl, node: str | None = None) -> None:
        self._on_control(command)

    def track(self, room: str, epoch: str, last: int) -> None:
        return None  # in-process delivery loses nothing

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _nowhere(item: object) -> None:
    """Before ``subscribe``: nothing listens yet."""

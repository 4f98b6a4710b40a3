"""Who may use the dashboard and the admin API.

Operators (``dashboard/roles.py``) each have a token; the API takes it as
``Authorization: Bearer``; the dashboard takes it once at login and
hands out a session cookie (HttpOnly, SameSite=Strict, a new random id per
login, kept in memory with an absolute and an idle expiry). Every
state-changing dashboard request must carry the session's CSRF token and come
from the dashboard's own origin. Tokens and CSRF values are compared in
constant time; login attempts and failed API calls are rate-limited per
address.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
import time
from typing import Protocol

from aiohttp import web

from chatserver.keys import SETTINGS
from chatserver.limits import host_allowed, origin_allowed

log = logging.getLogger(__name__)

SESSION_COOKIE = "chat_admin_session"
LOGIN_COOKIE = "chat_admin_login"  # the login form's double-submit CSRF value
COOKIE_PATH = "/admin/"
MAX_TOKEN_CHARS = 1024
SESSION_TTL = 8 * 3600.0
SESSION_IDLE = 3600.0
MAX_SESSIONS = 1000
LOGIN_BURST = 10  # attempts an address may make at once ...
LOGIN_REFILL = 6.0  # ... then one more every this many seconds


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one
    (the admin token, a session's CSRF token, the login form's nonce).

    Empty, oversized and unencodable (non-UTF-8 header bytes) values never match,
    and an empty expected value matches nothing: the dashboard is never open.
    """
    if not given or not expected or len(given) > MAX_TOKEN_CHARS:
        return False
    try:
        given_bytes = given.encode("utf-8")
    except UnicodeEncodeError:
        return False
    expected_bytes = expected.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given_bytes, expected_bytes)


ROLES = ("viewer", "moderator", "admin")  # each may do what the one before may, and more


@dataclasses.dataclass(frozen=True, slots=True)
class Operator:
    """One person (or script) allowed in, by name, with a role."""

    name: str
    role: str
    token_hash: str = ""  # empty for the --admin-token operator, checked by value

    def may(self, role: str) -> bool:
        """Whether this operator's role is at least ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def actor(self, via: str, address: str) -> str:
        """The audit log's name for this operator acting through ``via``."""
        return f"{self.name} via {via}@{address}"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role}


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@dataclasses.dataclass(slots=True)
class AdminSession:
    """One logged-in browser."""

    sid: str
    csrf: str
    address: str
    created: float
    last_seen: float
    operator: Operator
    flash: str = ""

    def expired(self, now: float) -> bool:
        return now - self.created > SESSION_TTL or now - self.last_seen > SESSION_IDLE


class AdminSessions(Protocol):
    """Logged-in browsers; shared by every node in Redis mode."""

    async def create(self, address: str, operator: Operator) -> AdminSession: ...

    async def get(self, sid: str, touch: bool = True) -> AdminSession | None:
        """The live session with this id (refreshing its idle timer), else None."""

    async def save(self, session: AdminSession) -> None:
        """Keep a change to ``session`` (its flash line)."""

    async def alive(self, session: AdminSession) -> bool: ...

    async def drop(self, sid: str) -> None: ...


class Attempts(Protocol):
    """Failed logins and API calls per address; shared by every node in Redis mode."""

    async def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""

    async def hit(self, address: str) -> None: ...


def new_session(address: str, operator: Operator) -> AdminSession:
    now = time.time()
    return AdminSession(
        secrets.token_urlsafe(32), secrets.token_urlsafe(32), address, now, now, operator
    )


class SessionStore:
    """Dashboard sessions in memory; a restart logs everyone out."""

    def __init__(self) -> None:
        self._sessions: dict[str, AdminSession] = {}

    async def create(self, address: str, operator: Operator) -> AdminSession:
        self.prune()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            self._sessions.pop(oldest.sid, None)
        session = new_session(address, operator)
        self._sessions[session.sid] = session
        return session

    async def get(self, sid: str, touch: bool = True) -> AdminSession | None:
        if not sid or len(sid) > MAX_TOKEN_CHARS:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = time.time()
        if session.expired(now):
            self._sessions.pop(sid, None)
            return None
        if touch:
            session.last_seen = now
        return session

    async def save(self, session: AdminSession) -> None:
        return None  # the object is the stored one

    async def alive(self, session: AdminSession) -> bool:
        return self._sessions.get(session.sid) is session and not session.expired(time.time())

    async def drop(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def prune(self) -> None:
        now = time.time()
        for sid in [sid for sid, s in self._sessions.items() if s.expired(now)]:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)


class AttemptLimiter:
    """A token bucket per address for login attempts and failed API calls."""

    def __init__(self, burst: int = LOGIN_BURST, refill: float = LOGIN_REFILL) -> None:
        self.burst = burst
        self.refill = refill
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    async def retry_after(self, address: str) -> float:
        tokens = self._tokens(address, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * self.refill

    async def hit(self, address: str) -> None:
        now = time.monotonic()
        self._buckets[address] = (max(self._tokens(address, now) - 1.0, 0.0), now)
        if len(self._buckets) > 10_000:
            self._forget_full(now)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.refill)

    def _forget_full(self, now: float) -> None:
        for address in [a for a in self._buckets if self._tokens(a, now) >= self.burst]:
            del self._buckets[address]


def same_origin(request: web.Request) -> bool:
    """False for a request a browser made on behalf of another site.

    Browsers send ``Sec-Fetch-Site`` and (on POST) ``Origin``; tools send
    neither, and the CSRF token stops those that forge nothing.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in {"same-origin", "none"}:
        return False
    settings = request.config_dict[SETTINGS]
    if not host_allowed(request.headers.get("Host"), settings.host, settings.allowed_hosts):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin_allowed(origin, request.host, ())


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)

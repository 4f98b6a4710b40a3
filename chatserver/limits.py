"""Rate, abuse, per-address and origin limits. A limit of ``0`` is off."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from urllib.parse import urlsplit

# After this many refused frames within ABUSE_WINDOW seconds the peer is closed (1008).
ABUSE_STRIKES = 20
ABUSE_WINDOW = 10.0


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one token per client frame.

    Refusals are counted as strikes that decay over ABUSE_WINDOW, so a client
    that keeps hammering after being told is told to go (``abusive()``).
    """

    __slots__ = ("_last", "_strike_start", "_tokens", "burst", "rate", "strikes")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self.strikes = 0
        self._strike_start = 0.0

    def take(self) -> bool:
        if not self.rate:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if now - self._strike_start > ABUSE_WINDOW:
            self._strike_start, self.strikes = now, 0
        self.strikes += 1
        return False

    def abusive(self) -> bool:
        return self.strikes >= ABUSE_STRIKES


class AddressCounter:
    """Concurrent connections per remote address."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()

    def try_acquire(self, address: str) -> bool:
        if self.limit and self._counts[address] >= self.limit:
            return False
        self._counts[address] += 1
        return True

    def release(self, address: str) -> None:
        self._counts[address] -= 1
        if self._counts[address] <= 0:
            del self._counts[address]


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Same-origin (the Origin's host:port equals the Host header) or listed.

    No Origin header means a non-browser client (CLI, websocat), which is fine:
    the check exists to stop other web pages from using a visitor's browser.
    """
    if origin is None:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if normalized in {item.rstrip("/").lower() for item in allowed} or "*" in allowed:
        return True
    parts = urlsplit(normalized)
    if parts.scheme not in {"http", "https"} or not parts.netloc or host is None:
        return False
    default_port = "443" if parts.scheme == "https" else "80"
    return _with_port(parts.netloc, default_port) == _with_port(host.lower(), default_port)


def _with_port(netloc: str, default_port: str) -> str:
    if netloc.endswith("]") or ":" not in netloc.rsplit("]", 1)[-1]:
        return f"{netloc}:{default_port}"
    return netloc


def host_allowed(host: str | None, listen_host: str, allowed: tuple[str, ...]) -> bool:
    """The ``Host`` header names this server: localhost, an IP literal, the listen
    host, or one of ``allowed`` (``*``: any). The port is not compared.

    Checked before the Origin comparison: a DNS-rebinding page at evil.example
    sends ``Host: evil.example`` and a matching Origin, which passes same-origin.
    An IP literal cannot be rebound, and tools that send no Host are not browsers.
    """
    if not host or "*" in allowed:
        return True
    name = _hostname(host)
    if name in {"localhost", listen_host.lower()} or name in {a.lower() for a in allowed}:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8765
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")

"""Registered names: password hashing, login checks, their rate limits, and the
rule that a guest cannot take a registered name.

Passwords are hashed with argon2id (``argon2-cffi``) at OWASP's minimum
parameters (19 MiB, 2 passes, 1 lane) on a worker thread, at most
``MAX_PARALLEL_HASHES`` at once, so a burst of logins costs neither the event
loop nor unbounded memory; past ``MAX_QUEUED_HASHES`` jobs waiting or running
on a node a password command is answered ``busy`` instead of queued. A
password never reaches a log line. Accounts are stored by the directory
(SQLite or Redis); this module only decides.

Every attempt that checks or makes a password hash is counted before the
hash runs (:meth:`LoginLimits.reserve`), so that parallel attempts cannot all
pass the limit before the first failure is recorded; a success gives its
attempt back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, Literal, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import Busy, CommandError
from .protocol import MAX_NAME_CHARS, User, default_name, name_key

if TYPE_CHECKING:
    from .directory import Directory

log = logging.getLogger(__name__)

Identity = Literal["guest", "registered", "token"]

MIN_PASSWORD_CHARS: Final = 8
MAX_PASSWORD_BYTES: Final = 1024  # hashing cost must not grow with what a client sends
MAX_PARALLEL_HASHES: Final = 2
MAX_QUEUED_HASHES: Final = 32  # hash jobs waiting or running per node before ``busy``
LOGIN_WINDOW: Final = 60.0  # seconds over which failed logins are counted
ADDRESS_FACTOR: Final = 4  # an address may fail this many times more than one name
MAX_TRACKED: Final = 10_000  # names and addresses with recent failures, before a sweep

_hasher: Final = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Its own threads: hashing neither blocks the loop nor queues behind other work,
# and at most MAX_PARALLEL_HASHES of them hold their 19 MiB at once.
_pool: Final = ThreadPoolExecutor(MAX_PARALLEL_HASHES, thread_name_prefix="chat-argon2")
# Verified when a name has no account, so that "no such name" and "wrong
# password" take the same time and cannot be told apart.
_DUMMY_HASH: Final = _hasher.hash(secrets.token_urlsafe(16))


@dataclasses.dataclass(slots=True)
class Account:
    """A registered name: who owns it (a user id) and its password hash."""

    key: str  # name_key(name)
    name: str
    user_id: int
    password_hash: str
    locked: bool = False
    created: float = 0.0
    # Replaced by every reset, lock, unlock and password change, and new with
    # every registration; a session saved under another one is not resumed.
    generation: int = 0


def new_generation() -> int:
    """A credential generation: random, so that two changes racing on two nodes
    cannot both land on the same value (an account from before generations has 0)."""
    return secrets.randbits(62) or 1


def check_password_rules(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise CommandError(
            "password_invalid", f"a password has at least {MIN_PASSWORD_CHARS} characters"
        )
    if len(password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES:
        raise CommandError("password_invalid", f"a password has at most {MAX_PASSWORD_BYTES} bytes")
    return password


class HashQueue:
    """Counts the hash jobs of this node (waiting or running) against ``limit``:
    a flood of password commands gets ``busy`` rather than an unbounded queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.jobs = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one job's place; raise Busy when every place is taken."""
        if self.jobs >= self.limit:
            raise Busy("the server is busy checking passwords; try again in a few seconds")
        self.jobs += 1
        try:
            yield
        finally:
            self.jobs -= 1


HASH_QUEUE: Final = HashQueue(MAX_QUEUED_HASHES)


async def hash_password(password: str) -> str:
    """The argon2 hash of ``password`` (the caller holds a HASH_QUEUE slot, or is
    an operator)."""
    return await asyncio.get_running_loop().run_in_executor(_pool, _hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; argon2 compares the digests in constant time."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, _verify_sync, password_hash, password)


def _verify_sync(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        log.warning("an account has an unreadable password hash")
        return False


def new_temporary_password() -> str:
    """What an operator's reset hands out (shown once, to the operator)."""
    return secrets.token_urlsafe(12)


class LoginLimits(Protocol):
    """Password attempts per name and per address (the directory provides one:
    in memory embedded, shared by every node in Redis mode)."""

    async def reserve(self, name: str, address: str) -> float:
        """Count one attempt now, before its password is checked, and return 0;
        or, when a limit is reached, count nothing and return the seconds until
        another attempt is allowed. Check and count are one step, so parallel
        attempts are all counted."""

    async def succeeded(self, name: str, address: str) -> None:
        """The attempt was right: forget the name's failures and give the
        address its attempt back."""


def limit_keys(name: str, address: str) -> tuple[str, str]:
    return f"name:{name_key(name)}", f"addr:{address}"


class LoginLimiter:
    """Password attempts per name and per address in a sliding window, in memory.

    ``limit`` attempts for one name (and ``ADDRESS_FACTOR`` times as many from
    one address) within ``LOGIN_WINDOW`` seconds, not given back by a success,
    refuse further attempts until the oldest leaves the window.
    """

    def __init__(self, limit: int, window: float = LOGIN_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    async def reserve(self, name: str, address: str) -> float:
        # No await from the check to the count: one step on the event loop.
        if not self.limit:
            return 0.0
        now = time.monotonic()
        by_name, by_address = limit_keys(name, address)
        wait = max(
            self._wait(by_name, self.limit, now),
            self._wait(by_address, self.limit * ADDRESS_FACTOR, now),
        )
        if wait > 0:
            return wait
        if len(self._failures) >= MAX_TRACKED:
            self._forget_old(now)
        for key in (by_name, by_address):
            self._failures.setdefault(key, deque()).append(now)
        return 0.0

    def _wait(self, key: str, limit: int, now: float) -> float:
        times = self._failures.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        return max(times[0] + self.window - now, 0.001) if len(times) >= limit else 0.0

    def _forget_old(self, now: float) -> None:
        """Drop keys whose last attempt left the window: guessing over many names
        or addresses must not grow this without bound."""
        stale = [k for k, times in self._failures.items() if times[-1] <= now - self.window]
        for key in stale:
            del self._failures[key]

    async def succeeded(self, name: str, address: str) -> None:
        by_name, by_address = limit_keys(name, address)
        self._failures.pop(by_name, None)
        times = self._failures.get(by_address)
        if times:
            times.pop()
            if not times:
                del self._failures[by_address]


async def check_login(
    account: Account | None, name: str, password: str, address: str, limiter: LoginLimits
) -> Account:
    """The account if ``password`` opens it; else CommandError (busy, rate
    limited, wrong name or password, locked)."""
    with HASH_QUEUE.slot():
        await _reserve(limiter, name, address, "login_rate_limited", "failed logins")
        matched = await verify_password(
            account.password_hash if account is not None else _DUMMY_HASH, password
        )
    if account is None or not matched:
        log.info("failed login for a name from %s", address)
        raise CommandError("login_failed", "wrong name or password")
    await limiter.succeeded(name, address)
    if account.locked:
        raise CommandError("account_locked", "this account is locked by an operator")
    return account


async def _reserve(limiter: LoginLimits, name: str, address: str, code: str, what: str) -> None:
    wait = await limiter.reserve(name, address)
    if wait > 0:
        raise CommandError(code, f"too many {what}; try again in {int(wait) + 1} s")


def ensure_not_registered(account: Account | None, name: str, user_id: int) -> None:
    """Refuse ``name`` to ``user_id`` when someone else registered it."""
    if account is not None and account.user_id != user_id:
        raise CommandError(
            "name_registered", f"the name {name!r} is registered; /login {name} to use it"
        )


class Accounts:
    """Register, log in, change or drop a password, and the operator's reset
    and lock; the accounts themselves are the directory's."""

    def __init__(self, directory: Directory, login_attempts: int) -> None:
        self.directory = directory
        self.limiter = directory.login_limits(login_attempts, "login")
        # Registrations cost a hash each: as many per name and address as logins,
        # counted whether they succeed or not.
        self.registrations = directory.login_limits(login_attempts, "register")

    async def ensure_free(self, name: str, user_id: int) -> None:
        """Raise ``name_registered`` if someone else registered ``name``."""
        ensure_not_registered(await self.directory.account(name), name, user_id)

    async def register(self, user: User, password: str, address: str) -> Account:
        """Register the name ``user`` holds now."""
        check_password_rules(password)
        if name_key(user.name) == name_key(default_name(user.id)):
            raise CommandError("name_invalid", "choose a name first (/nick NAME), then register it")
        existing = await self.directory.account(user.name)
        if existing is not None and existing.user_id == user.id:
            raise CommandError("already_registered", f"{user.name!r} is registered already")
        ensure_not_registered(existing, user.name, user.id)
        with HASH_QUEUE.slot():
            await _reserve(
                self.registrations, user.name, address, "register_rate_limited", "registrations"
            )
            password_hash = await hash_password(password)
        key, now = name_key(user.name), time.time()
        account = Account(key, user.name, user.id, password_hash, False, now, new_generation())
        if not await self.directory.create_account(account):
            raise CommandError("name_registered", f"the name {user.name!r} is registered")
        log.info("user %s registered a name", user.id)
        return account

    async def login(self, name: str, password: str, address: str) -> Account:
        if not 0 < len(name) <= MAX_NAME_CHARS or len(password) > MAX_PASSWORD_BYTES:
            raise CommandError("login_failed", "wrong name or password")
        account = await self.directory.account(name)
        return await check_login(account, name, password, address, self.limiter)

    async def own(self, user: User, password: str, address: str) -> Account:
        """The account ``user`` is logged into, after checking its password again."""
        account = await self.directory.account(user.name)
        if account is None or account.user_id != user.id:
            raise CommandError("not_registered", "you are not logged into a registered name")
        return await check_login(account, user.name, password, address, self.limiter)

    async def change_password(self, user: User, old: str, new: str, address: str) -> Account:
        check_password_rules(new)
        account = await self.own(user, old, address)
        with HASH_QUEUE.slot():
            account.password_hash = await hash_password(new)
        account.generation = new_generation()
        await self.directory.save_account(account)
        return account

    async def unregister(self, user: User, password: str, address: str) -> Account:
        account = await self.own(user, password, address)
        await self.directory.delete_account(account.name)
        return account

    async def reset(self, name: str) -> tuple[Account, str]:
        """A new temporary password for ``name`` (the operator hands it over)."""
        account = await self._existing(name)
        password = new_temporary_password()
        account.password_hash = await hash_password(password)
        account.generation = new_generation()
        await self.directory.save_account(account)
        return account, password

    async def set_locked(self, name: str, locked: bool) -> Account:
        account = await self._existing(name)
        account.locked, account.generation = locked, new_generation()
        await self.directory.save_account(account)
        return account

    async def _existing(self, name: str) -> Account:
        account = await self.directory.account(name)
        if account is None:
            raise CommandError("not_registered", f"no account is registered as {name!r}")
        return account

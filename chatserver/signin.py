"""Signing in: credentials at connect (``?token=``, or a first ``auth`` frame
with a token or a name and password) and the account commands of a live
connection (register, login, password, unregister).

Credentials are never logged: a refusal logs its reason and the address.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Final

import msgspec
from aiohttp import WSMsgType, web

from .accounts import Account, Identity
from .broker import CloseUser
from .connection import Connection
from .directory import SessionRecord
from .errors import ChatError, CommandError, Unavailable
from .hub import CLOSE_KICKED, Hub
from .protocol import (
    SUBPROTOCOL,
    AccountCommand,
    Auth,
    ChangePassword,
    IdentifiedEvent,
    Login,
    Register,
    Rendered,
    SystemEvent,
    Unregister,
    User,
)
from .session import hash_token, new_token
from .settings import Settings
from .tokens import TokenError, TokenVerifier

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED: Final = 4401  # do not reconnect with the same credentials
AUTH_FRAME_TIMEOUT: Final = 10.0  # seconds a client has to send its first frame

_decode_auth: Final = msgspec.json.Decoder(Auth).decode


class SignInRefused(ChatError):
    """A connection's credentials were refused; ``reason`` is its close reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class SignedIn:
    """Who valid credentials say the user is."""

    user_id: int
    name: str | None
    identity: Identity
    allowed_rooms: list[str] | None = None
    subject: str | None = None  # a token's ``sub``
    expires: float | None = None  # a token's ``exp``
    # A login's: a reset meanwhile changes it. Not in the repr, like any secret.
    password_hash: str = dataclasses.field(default="", repr=False)
    generation: int = 0  # a login's account credential generation


async def read_credentials(
    request: web.Request, ws: web.WebSocketResponse, settings: Settings
) -> Auth:
    """``?token=``, else the first frame when the client said ``?auth=frame``
    (or when the chat takes tokens only and a ``chat.v1`` client gave none)."""
    query = request.query
    if "token" in query:
        return Auth(token=query["token"])
    wants_frame = query.get("auth") == "frame" or (
        settings.auth == "token" and not query.get("session")
    )
    if not wants_frame or ws.ws_protocol != SUBPROTOCOL:
        return Auth()
    try:
        msg = await ws.receive(timeout=AUTH_FRAME_TIMEOUT)
    except TimeoutError:
        raise SignInRefused("no auth frame in time") from None
    if msg.type is not WSMsgType.TEXT:
        raise SignInRefused("expected an auth frame first")
    try:
        return _decode_auth(msg.data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise SignInRefused('the first frame must be {"type": "auth", ...}') from None


async def sign_in(
    hub: Hub, verifier: TokenVerifier | None, creds: Auth, address: str
) -> SignedIn | None:
    """The identity credentials prove (None: none given); refusals raise."""
    if creds.token is not None:
        if verifier is None:
            raise SignInRefused("this chat does not accept tokens")
        try:
            claims = verifier.verify(creds.token)
        except TokenError as exc:
            log.info("refused a connection token from %s: %s", address, exc.reason)
            raise SignInRefused(exc.reason) from None
        user_id = await hub.directory.subject_user(claims.subject)
        return SignedIn(user_id, claims.name, "token", claims.rooms, claims.subject, claims.expires)
    if creds.name is None and creds.password is None:
        return None
    if hub.settings.auth == "token":
        raise SignInRefused("this chat takes tokens from its site only")
    try:
        account = await hub.accounts.login(creds.name or "", creds.password or "", address)
    except Unavailable:
        raise  # busy: the client may try again (1013), unlike a refusal
    except CommandError as exc:
        raise SignInRefused(exc.message) from None
    return SignedIn(
        account.user_id,
        account.name,
        "registered",
        password_hash=account.password_hash,
        generation=account.generation,
    )


def session_current(record: SessionRecord, account: Account | None) -> bool:
    """Whether a registered session was saved under its account's current
    credential generation (``account``: the one of the record's name). A reset,
    lock or password change replaces the generation, so a record that a live
    connection on another node saved again after its tokens were ended cannot
    resume as that account. A session whose name is no longer its account's
    stays current (it resumes as a guest)."""
    if record.identity != "registered":
        return True
    if account is None or account.user_id != record.user_id:
        return True
    return account.generation == record.generation


def check_resumed(
    settings: Settings, record: SessionRecord, account: Account | None, renewed: bool
) -> tuple[Identity, bool]:
    """How a resumed session is identified now (``account``: the one of the
    record's name), and whether its name is still its own (False: someone else
    registered it). A token user's session does not outlive the token
    (``renewed``: the client brought a new one)."""
    if record.identity == "token" and not renewed and token_expired(record, settings):
        raise SignInRefused("token expired")
    mine = account is not None and account.user_id == record.user_id
    if mine and account is not None and account.locked:
        raise SignInRefused("this account is locked")
    identity: Identity = "guest"
    if record.identity == "token":
        identity = "token"
    elif record.identity == "registered" and mine:
        identity = "registered"
    return identity, account is None or mine


async def account_taken_away(hub: Hub, conn: Connection, password_hash: str = "") -> str:
    """Why a registered connection may not stay, now that it is registered on
    this node ("" : it may). Its sign-in read the account before the password
    check or the directory calls that followed; a lock or a reset that landed
    meanwhile sent its close before this connection could receive it. From
    here on that close reaches it, so one more read closes the gap.
    ``password_hash``: the hash the login matched (a resume has none). Either
    way the connection's credential generation must still be the account's:
    a reset, lock or password change replaced it."""
    if conn.identity != "registered":
        return ""
    account = await hub.directory.account(conn.name)
    if account is None or account.user_id != conn.user.id:
        return "this name is no longer registered"
    if account.locked:
        return "this account is locked by an operator"
    if password_hash and account.password_hash != password_hash:
        return "the password was changed; log in again"
    if account.generation != conn.generation:
        return "this session has ended; log in again"
    if not password_hash and await hub.directory.load_session(conn.session) is None:
        return "this session has ended; log in again"
    return ""


def token_expired(record: SessionRecord, settings: Settings) -> bool:
    """Whether a token session's ``exp`` (plus the leeway) has passed. A record
    from before ``exp`` was saved has none, and counts as expired: only a new
    token can say how long it may last."""
    if record.token_expires is None:
        return True
    return record.token_expires + settings.token_leeway <= time.time()


# ---------------------------------------------------------------------- commands


async def account_command(conn: Connection, hub: Hub, command: AccountCommand) -> None:
    """Apply register, login, password or unregister for ``conn``."""
    if conn.identity == "token":
        raise CommandError("token_user", "your site's token says who you are here")
    accounts = hub.accounts
    if isinstance(command, Register):
        await _register(conn, hub, command)
    elif isinstance(command, Login):
        await _login(conn, hub, command)
    elif isinstance(command, ChangePassword):
        account = await accounts.change_password(conn.user, command.old, command.new, conn.remote)
        conn.generation = account.generation
        await hub.directory.end_sessions(conn.user.id, keep=conn.session)
        hub.save_session(conn)  # under the new generation: this session goes on
        text = "Password changed; your other sessions have ended."
        conn.send(Rendered(SystemEvent(text=text)))
    elif isinstance(command, Unregister):
        await accounts.unregister(conn.user, command.password, conn.remote)
        _identified(conn, hub, "guest")


async def _register(conn: Connection, hub: Hub, command: Register) -> None:
    """Register the name ``conn`` holds, with a new resume token: the guest's
    token, which may have been seen (a URL, a shared machine), must not
    become the account's credential."""
    if conn.identity == "registered":
        raise CommandError("already_registered", "you are logged into a registered name")
    account = await hub.accounts.register(conn.user, command.password, conn.remote)
    old_session, token = conn.session, new_token()
    conn.session, conn.generation = hash_token(token), account.generation
    if old_session:
        # Same user id: the old record must end, not merely be left behind.
        hub.directory.save_session(SessionRecord(old_session, conn.user.id, conn.name, [], 0.0))
    conn.identity = "registered"
    conn.send(Rendered(IdentifiedEvent(user=conn.user, identity="registered", session=token)))
    hub.identity_changed(conn)  # saves the new session


async def _login(conn: Connection, hub: Hub, command: Login) -> None:
    if hub.settings.auth == "token":
        raise CommandError("login_disabled", "this chat takes tokens from its site only")
    account = await hub.accounts.login(command.name, command.password, conn.remote)
    old_user, old_session, old_identity = conn.user, conn.session, conn.identity
    old_generation = conn.generation
    # A new resume token for the new identity: the guest's ends here.
    token = new_token()
    conn.session, conn.identity = hash_token(token), "registered"
    conn.generation = account.generation
    try:
        await hub.become(conn, User(account.user_id, account.name))
    except BaseException:
        conn.session, conn.identity = old_session, old_identity
        conn.generation = old_generation
        raise
    if old_session and old_user.id != conn.user.id:
        hub.directory.save_session(SessionRecord(old_session, old_user.id, old_user.name, [], 0.0))
    reason = await account_taken_away(hub, conn, account.password_hash)
    if reason:
        conn.session = ""  # nothing to resume
        hub.kick(conn, reason)
        return
    hub.save_session(conn)
    event = IdentifiedEvent(user=conn.user, identity="registered", session=token)
    conn.send(Rendered(event))


def _identified(conn: Connection, hub: Hub, identity: Identity) -> None:
    conn.identity = identity
    conn.send(Rendered(IdentifiedEvent(user=conn.user, identity=identity)))
    if identity == "guest":
        # What only registered users may join must not outlive the registration.
        for room in [r for r in conn.rooms if r in hub.settings.restricted_rooms]:
            hub.leave(conn, room)
    hub.identity_changed(conn)


async def end_account(hub: Hub, user_id: int, reason: str) -> None:
    """Close the account's connection on whichever node serves it, and forget
    its resume tokens (an operator locked it or reset its password)."""
    hub.broker.control(CloseUser(user_id, CLOSE_KICKED, reason))
    await hub.directory.end_sessions(user_id)

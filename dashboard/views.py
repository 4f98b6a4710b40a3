"""The dashboard's pages and forms: login, logout, the live page, the actions.

Pages without a session redirect to the login page; POSTs without one get
401. Every POST must come from this origin (``Sec-Fetch-Site``/``Origin``)
and carry the CSRF token (the login form a per-form nonce that is also in a
cookie, every other form the session's token); both are compared in constant
time. Forms answer with a redirect and a flash line, or with JSON when the
page's script asks for it (``Accept: application/json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from yarl import URL

from chatserver import __version__
from chatserver.errors import CommandError
from chatserver.keys import HUB, ROOM_LOG, SETTINGS
from chatserver.moderation import format_time
from chatserver.ws import client_address

from . import actions
from .api import error_response, outcome_response
from .auth import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AdminSession,
    new_login_nonce,
    same_origin,
    token_matches,
)
from .keys import LIMITER, LIVE, MODERATION, OPERATORS, SESSIONS
from .live import AUDIT_SHOWN, serve_viewer
from .roles import authorize, may_lift
from .rows import (
    ROOM_MESSAGES,
    SORTS,
    ConnectionQuery,
    connection_row,
    message_row,
    page_url,
    room_members,
    room_rows,
    select,
)

log = logging.getLogger(__name__)

LOGIN_URL = "/admin/login"
HOME_URL = "/admin/"
# The one-click buttons on each connection row: action, label, and the duration
# a form posts without script (with script a dialog asks, with these defaults).
ROW_OPS = (("kick", "Kick", ""), ("mute", "Mute", "10m"), ("ban", "Ban", "1h"))


async def _take_flash(request: web.Request, session: AdminSession) -> str:
    """The session's one-time status line, cleared as it is shown."""
    flash, session.flash = session.flash, ""
    if flash:
        await request.config_dict[SESSIONS].save(session)
    return flash


async def current_session(request: web.Request) -> AdminSession | None:
    return await request.config_dict[SESSIONS].get(request.cookies.get(SESSION_COOKIE, ""))


def address_of(request: web.Request) -> str:
    return client_address(request, request.config_dict[SETTINGS])


def _refusal(request: web.Request, status: int, message: str) -> web.Response:
    if _wants_json(request):
        body = {
            "error": {"code": "forbidden" if status == 403 else "unauthorized", "message": message}
        }
        return web.json_response(body, status=status)
    return web.Response(status=status, text=message + "\n")


def _redirect(location: str) -> web.Response:
    """A 303 to ``location`` that can carry cookies (raise HTTPSeeOther when it need not)."""
    return web.Response(status=303, headers={"Location": location})


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    secure = _browser_uses_https(request)
    response.set_cookie(
        name, value, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=secure
    )


def _browser_uses_https(request: web.Request) -> bool:
    """HTTPS to us, or (with --trusted-proxy) to the TLS-terminating proxy in front,
    which says so in X-Forwarded-Proto (its own entry is the rightmost)."""
    if request.secure:
        return True
    if not request.config_dict[SETTINGS].trusted_proxy:
        return False
    proto = request.headers.get("X-Forwarded-Proto", "")
    return proto.rsplit(",", 1)[-1].strip().lower() == "https"


# --------------------------------------------------------------------------- login


async def login_page(request: web.Request) -> web.StreamResponse:
    return _login_form(request, 200, "")


def _login_form(request: web.Request, status: int, error: str) -> web.Response:
    nonce = new_login_nonce()
    context = {"nonce": nonce, "error": error, "version": __version__}
    response = aiohttp_jinja2.render_template("login.html", request, context, status=status)
    _set_cookie(request, response, LOGIN_COOKIE, nonce)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """Check the admin token; on success start a new session (a fresh random id)."""
    address = address_of(request)
    if not same_origin(request):
        return _refusal(request, 403, "cross-site login refused")
    limiter = request.config_dict[LIMITER]
    wait = await limiter.retry_after(address)
    if wait > 0:
        response = _login_form(request, 429, "Too many attempts. Wait a minute and try again.")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    form = await request.post()
    nonce, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")
    if not isinstance(nonce, str) or not cookie or not token_matches(nonce, cookie):
        return _login_form(request, 403, "The form has expired; please log in again.")
    token = form.get("token")
    operator = (
        request.config_dict[OPERATORS].authenticate(token) if isinstance(token, str) else None
    )
    if operator is None:
        await limiter.hit(address)
        log.warning("failed dashboard login from %s", address)
        return _login_form(request, 401, "Wrong operator token.")
    session = await request.config_dict[SESSIONS].create(address, operator)
    await request.config_dict[MODERATION].record(
        operator.actor("dashboard", address), "login", "dashboard"
    )
    response = _redirect(HOME_URL)
    _set_cookie(request, response, SESSION_COOKIE, session.sid)
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther(LOGIN_URL)
    refusal = await _check_post(request, session)
    if refusal is not None:
        return refusal
    await request.config_dict[SESSIONS].drop(session.sid)
    await request.config_dict[LIVE].end_session(session)
    await request.config_dict[MODERATION].record(
        session.operator.actor("dashboard", address_of(request)), "logout", "dashboard"
    )
    response = _redirect(LOGIN_URL)
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


async def _check_post(request: web.Request, session: AdminSession) -> web.Response | None:
    """None if this POST is same-origin and carries the session's CSRF token."""
    if not same_origin(request):
        return _refusal(request, 403, "cross-site request refused")
    form = await request.post()
    given = form.get("csrf")
    if not isinstance(given, str):
        given = request.headers.get("X-CSRF-Token", "")
    if not token_matches(given, session.csrf):
        return _refusal(request, 403, "missing or wrong CSRF token; reload the page")
    return None


# --------------------------------------------------------------------------- pages


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther(LOGIN_URL)
    hub, live = request.config_dict[HUB], request.config_dict[LIVE]
    moderation = request.config_dict[MODERATION]
    live.learn_node(request)
    flash = await _take_flash(request, session)
    try:
        query = ConnectionQuery.parse(request.query)
    except CommandError as exc:
        query, flash = ConnectionQuery(), exc.message
    selection = select(hub, query)
    context: dict[str, Any] = {
        "version": __version__,
        "csrf": session.csrf,
        "flash": flash,
        "query": query,
        "position": selection.position(),
        "rows": [connection_row(hub, conn) for conn in selection.connections],
        "stats": live.stats(),
        "rooms": room_rows(hub, live.sampler.room_rates),
        "bans": moderation.active_bans(),
        "mutes": moderation.active_mutes(),
        "audit": list(reversed(moderation.recent_audit))[:AUDIT_SHOWN],
        "sorts": ["id", *SORTS],
        "row_ops": ROW_OPS if session.operator.may("moderator") else (),
        "operator": session.operator,
        "can_act": session.operator.may("moderator"),
        "can_lift": lambda ban: may_lift(session.operator, ban.actor),
        "prev_url": page_url(query, max(1, selection.page - 1)),
        "next_url": page_url(query, min(selection.pages, selection.page + 1)),
    }
    return aiohttp_jinja2.render_template("dashboard.html", request, context)


async def room_page(request: web.Request) -> web.StreamResponse:
    """One room: its members and its live message stream, with actions on both."""
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther(LOGIN_URL)
    hub, room_log = request.config_dict[HUB], request.config_dict[ROOM_LOG]
    name = request.match_info["room"].lstrip("#")
    flash = await _take_flash(request, session)
    messages, _ = await room_log.before(name, None, ROOM_MESSAGES)
    context: dict[str, Any] = {
        "version": __version__,
        "csrf": session.csrf,
        "flash": flash,
        "room": name,
        "members": room_members(hub, name, request.config_dict[LIVE].remote_rows()),
        "messages": [message_row(message) for message in messages],
        "row_ops": ROW_OPS if session.operator.may("moderator") else (),
        "operator": session.operator,
        "can_act": session.operator.may("moderator"),
    }
    return aiohttp_jinja2.render_template("room.html", request, context)


async def live_channel(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is None:
        return _refusal(request, 401, "log in first")
    if not same_origin(request):
        return _refusal(request, 403, "cross-site request refused")
    live = request.config_dict[LIVE]
    live.learn_node(request)
    return await serve_viewer(live, request, session)


# --------------------------------------------------------------------------- actions


async def action(request: web.Request) -> web.StreamResponse:
    """``POST /admin/action/{name}`` from a dashboard form."""
    session = await current_session(request)
    if session is None:
        return _refusal(request, 401, "log in first")
    refusal = await _check_post(request, session)
    if refusal is not None:
        return refusal
    handler = actions.BY_NAME.get(request.match_info["name"])
    if handler is None:
        raise web.HTTPNotFound(text="no such action\n")
    form = await request.post()
    fields: dict[str, object] = {
        k: v for k, v in form.items() if isinstance(v, str) and k not in {"csrf", "conn_ids"}
    }
    # The bulk form's ticked rows: one field per row (a dict would keep only one).
    fields["conn_ids"] = [v for v in form.getall("conn_ids", []) if isinstance(v, str)]
    try:
        config, operator = request.config_dict, session.operator
        authorize(operator, request.match_info["name"], fields, config[MODERATION])
        actor = operator.actor("dashboard", address_of(request))
        outcome = await handler(config[HUB], config[MODERATION], fields, actor)
    except CommandError as exc:
        if _wants_json(request):
            return error_response(actions.status_of(exc), exc.code, exc.message)
        session.flash = f"Error: {exc.message}"
        await config[SESSIONS].save(session)
        raise web.HTTPSeeOther(_back(request)) from None
    if _wants_json(request):
        return outcome_response(outcome)
    session.flash = outcome.message
    await config[SESSIONS].save(session)
    raise web.HTTPSeeOther(_back(request))


def _back(request: web.Request) -> str:
    """Where a form without script returns: the dashboard view it was sent from
    (its filter and page), if the Referer is one of our pages, else the dashboard."""
    referer = URL(request.headers.get("Referer", ""))
    if referer.host != request.url.host or referer.port != request.url.port:
        return HOME_URL
    if not referer.path.startswith(HOME_URL) or referer.path.startswith(LOGIN_URL):
        return HOME_URL
    return str(referer.relative())


# --------------------------------------------------------------------------- wiring


async def dashboard_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A strict CSP (no inline script or style at all) and no caching of admin pages.

    An ``on_response_prepare`` signal (it also runs for HTTP exceptions), not a
    middleware: see ``dashboard/api.py`` for why middlewares cost every chat socket.
    """
    if isinstance(response, web.WebSocketResponse):
        return
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    if not request.path.startswith("/admin/static/"):
        response.headers["Cache-Control"] = "no-store"


def add_routes(sub: web.Application) -> None:
    sub.router.add_get("/", dashboard_page, name="dashboard")
    sub.router.add_get("/login", login_page, name="login")
    sub.router.add_post("/login", login)
    sub.router.add_post("/logout", logout, name="logout")
    sub.router.add_get("/live", live_channel, name="live")
    sub.router.add_get("/rooms/{room}", room_page, name="room")
    sub.router.add_post("/action/{name}", action, name="action")


def jinja_filters() -> dict[str, Callable[..., str]]:
    return {"clock": _clock, "human_bytes": human_bytes, "utc": format_time}


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"

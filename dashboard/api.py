"""The admin JSON API under ``/admin/api/`` (``Authorization: Bearer <token>``).

Every route, and a catch-all for unknown ones, is wrapped by :func:`guarded`,
which authenticates and turns every failure into ``{"error": {"code",
"message"}}``. A decorator rather than a middleware: any middleware in a
sub-app makes aiohttp run the middleware chain for every request of the main
app, keeping extra frames alive for the life of every chat WebSocket.
See docs/admin-api.md for the routes and curl examples.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from chatserver.errors import CommandError
from chatserver.inputs import check_json_depth
from chatserver.keys import HUB, ROOM_LOG, SETTINGS
from chatserver.protocol import parse_uint
from chatserver.ws import client_address

from . import actions
from .auth import Operator, bearer_token
from .keys import LIMITER, LIVE, MODERATION, OPERATORS
from .roles import authorize
from .rows import (
    ROOM_MESSAGES,
    ConnectionQuery,
    cluster_stats,
    connection_row,
    merged_rooms,
    message_row,
    page_of_rows,
    room_members,
    room_rows,
)

log = logging.getLogger(__name__)

MAX_AUDIT_LIMIT = 500
OPERATOR = web.RequestKey("admin_operator", Operator)  # who this API request is


def error_response(status: int, code: str, message: str) -> web.Response:
    response = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="chatserver admin"'
    return response


def guarded(handler: Handler) -> Handler:
    """Wrap an API handler with authentication and JSON errors."""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        return await api_guard(request, handler)

    return guard


async def api_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer authentication, per-address throttling of failures, JSON errors."""
    address = client_address(request, request.config_dict[SETTINGS])
    limiter = request.config_dict[LIMITER]
    wait = await limiter.retry_after(address)
    if wait > 0:
        response = error_response(429, "too_many_attempts", "too many failed attempts; wait")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    operator = request.config_dict[OPERATORS].authenticate(bearer_token(request))
    if operator is None:
        await limiter.hit(address)
        return error_response(
            401, "unauthorized", "a valid 'Authorization: Bearer TOKEN' is needed"
        )
    request[OPERATOR] = operator
    try:
        answer = await handler(request)
    except CommandError as exc:
        return error_response(actions.status_of(exc), exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    return answer  # dashboard_headers marks it no-store, like every admin response


def actor(request: web.Request) -> str:
    """The audit log's name for this request's operator."""
    return request[OPERATOR].actor("api", client_address(request, request.config_dict[SETTINGS]))


async def json_body(request: web.Request) -> dict[str, object]:
    """The request's JSON object (an empty body is ``{}``); else 400 ``bad_json``."""
    raw = await request.read()
    if not raw.strip():
        return {}
    check_json_depth(raw)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError("bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("bad_json", "the body must be a JSON object")
    return data


def path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    number = parse_uint(raw)
    if number is None:
        raise CommandError("not_found", f"no such id: {raw}")
    return number


def outcome_response(outcome: actions.Outcome) -> web.Response:
    return web.json_response({"message": outcome.message, **outcome.data}, status=outcome.status)


# --------------------------------------------------------------------------- reading


async def get_connections(request: web.Request) -> web.Response:
    """A page of every node's connections (each row names its node)."""
    hub, live = request.config_dict[HUB], request.config_dict[LIVE]
    query = ConnectionQuery.parse(request.query)
    remote = [row for s in await live.fresh_remote() for row in s.get("rows", [])]
    position, rows = page_of_rows(hub, query, remote)
    return web.json_response({**position, "connections": rows})


async def get_connection(request: web.Request) -> web.Response:
    hub = request.config_dict[HUB]
    conn = actions.live_connection(hub, path_id(request))
    return web.json_response({"connection": connection_row(hub, conn)})


async def get_stats(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    moderation = request.config_dict[MODERATION]
    live.learn_node(request)
    stats: dict[str, Any] = live.stats()
    remote = await live.fresh_remote()
    if remote:
        here = {**stats, "node": request.config_dict[HUB].node}
        stats["cluster"] = cluster_stats(here, remote)
        stats["nodes"] = [here, *(snapshot["stats"] for snapshot in remote)]
    stats.update(bans=len(moderation.active_bans()), mutes=len(moderation.active_mutes()))
    stats["chart"] = list(live.sampler.history)[-60:]
    return web.json_response(stats)


async def get_rooms(request: web.Request) -> web.Response:
    hub, live = request.config_dict[HUB], request.config_dict[LIVE]
    limit = parse_uint(request.query.get("limit", "50"))
    if limit is None or not 1 <= limit <= 1000:
        raise CommandError("bad_request", "limit must be 1..1000")
    rows = room_rows(hub, live.sampler.room_rates, limit)
    remote = await live.fresh_remote()
    if remote:
        rows = merged_rooms(rows, remote, limit)
    return web.json_response({"total": len(rows) if remote else len(hub.rooms), "rooms": rows})


async def delete_room_message(request: web.Request) -> web.Response:
    fields = {"room": request.match_info["room"], "id": path_id(request)}
    return await act(request, actions.delete, fields)


async def get_room(request: web.Request) -> web.Response:
    """One room: its members and its last 50 stored messages."""
    hub, room_log = request.config_dict[HUB], request.config_dict[ROOM_LOG]
    name = request.match_info["room"]
    remote = await request.config_dict[LIVE].fresh_remote()
    members = room_members(hub, name, [row for s in remote for row in s.get("rows", [])])
    messages, _ = await room_log.before(name.lstrip("#"), None, ROOM_MESSAGES)
    rows = [message_row(message) for message in messages]
    return web.json_response({"room": name.lstrip("#"), "members": members, "messages": rows})


async def get_bans(request: web.Request) -> web.Response:
    moderation = request.config_dict[MODERATION]
    return web.json_response({"bans": [ban.as_dict() for ban in moderation.active_bans()]})


async def get_mutes(request: web.Request) -> web.Response:
    moderation = request.config_dict[MODERATION]
    return web.json_response({"mutes": [mute.as_dict() for mute in moderation.active_mutes()]})


async def get_whoami(request: web.Request) -> web.Response:
    return web.json_response({"operator": request[OPERATOR].as_dict()})


async def get_operators(request: web.Request) -> web.Response:
    operator = request[OPERATOR]
    if not operator.may("admin"):
        raise CommandError(
            "forbidden", f"{operator.name} is a {operator.role}; listing operators needs admin"
        )
    return web.json_response({"operators": request.config_dict[OPERATORS].listing()})


async def get_audit(request: web.Request) -> web.Response:
    moderation = request.config_dict[MODERATION]
    limit = parse_uint(request.query.get("limit", "100"))
    if limit is None or not 1 <= limit <= MAX_AUDIT_LIMIT:
        raise CommandError("bad_request", f"limit must be 1..{MAX_AUDIT_LIMIT}")
    raw_before = request.query.get("before", "")
    before = parse_uint(raw_before) if raw_before else None
    if raw_before and before is None:
        raise CommandError("bad_request", "before must be an audit entry id")
    entries, more = await moderation.audit_page(limit, before)
    return web.json_response({"entries": [e.as_dict() for e in entries], "more": more})


# --------------------------------------------------------------------------- acting


async def act(request: web.Request, action: actions.Action, fields: actions.Fields) -> web.Response:
    config = request.config_dict
    name = next(key for key, value in actions.BY_NAME.items() if value is action)
    authorize(request[OPERATOR], name, fields, config[MODERATION])
    outcome = await action(config[HUB], config[MODERATION], fields, actor(request))
    return outcome_response(outcome)


def with_body(action: actions.Action) -> Handler:
    """A route that runs ``action`` on the request's JSON body."""

    async def handler(request: web.Request) -> web.Response:
        return await act(request, action, await json_body(request))

    return handler


def on_path_id(action: actions.Action, key: str) -> Handler:
    """A route that runs ``action`` on the ``{id}`` of its path, as field ``key``."""

    async def handler(request: web.Request) -> web.Response:
        return await act(request, action, {key: path_id(request)})

    return handler


def on_account(action: actions.Action, **fixed: object) -> Handler:
    """A route that runs ``action`` on the account ``{name}`` of its path."""

    async def handler(request: web.Request) -> web.Response:
        fields = {**fixed, "name": request.match_info["name"]}
        return await act(request, action, fields)

    return handler


async def post_kick_connection(request: web.Request) -> web.Response:
    body = await json_body(request)
    return await act(
        request, actions.kick, {"reason": body.get("reason"), "conn_id": path_id(request)}
    )


def create_api() -> web.Application:
    """The API sub-app; mounted at ``/api/`` inside the dashboard."""
    api = web.Application()
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/connections", get_connections),
        ("GET", "/connections/{id}", get_connection),
        ("POST", "/connections/{id}/kick", post_kick_connection),
        ("POST", "/kick", with_body(actions.kick)),
        ("GET", "/bans", get_bans),
        ("POST", "/bans", with_body(actions.ban)),
        ("DELETE", "/bans/{id}", on_path_id(actions.unban, "ban_id")),
        ("GET", "/mutes", get_mutes),
        ("POST", "/mutes", with_body(actions.mute)),
        ("DELETE", "/mutes/{id}", on_path_id(actions.unmute, "mute_id")),
        ("POST", "/announce", with_body(actions.announce)),
        ("POST", "/bulk", with_body(actions.bulk)),
        ("POST", "/delete", with_body(actions.delete)),
        ("DELETE", "/rooms/{room}/messages/{id}", delete_room_message),
        ("GET", "/rooms/{room}", get_room),
        ("GET", "/audit", get_audit),
        ("GET", "/stats", get_stats),
        ("GET", "/rooms", get_rooms),
        ("GET", "/whoami", get_whoami),
        ("GET", "/operators", get_operators),
        ("POST", "/accounts/{name}/reset", on_account(actions.reset_account)),
        ("POST", "/accounts/{name}/lock", on_account(actions.lock_account, locked=True)),
        ("POST", "/accounts/{name}/unlock", on_account(actions.lock_account, locked=False)),
        # Last: unknown paths (and known paths with another method) get a JSON 404,
        # after authentication like everything else.
        # [\s\S], not ".": a path with an encoded newline must land here too.
        ("*", "/{tail:[\\s\\S]*}", unknown_route),
    ]
    for method, path, handler in routes:
        api.router.add_route(method, path, guarded(handler))
    return api


async def unknown_route(request: web.Request) -> web.Response:
    """404 for an unknown path; 405 for a known path with another method."""
    for resource in request.app.router.resources():
        if resource.canonical.endswith("/{tail}"):
            continue
        match, allowed = await resource.resolve(request)
        if match is None and allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound(reason="No such API route")

"""Hostile input at the edge: numbers past what SQLite holds, deep nesting,
look-alike names and forged lines get an error reply, never a crashed handler."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from chatserver.guard import CrashReporter
from tests.conftest import ADMIN_AUTH, Client, join
from tests.test_dashboard import log_in, next_of, next_reset

HUGE = 2**63  # one past SQLite's largest INTEGER
DEEP = "[" * 5000 + "]" * 5000  # 10 KB: within the frame limit, past msgspec's recursion limit


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    crashed = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not crashed, [r.getMessage() for r in crashed]


@pytest.mark.parametrize(
    "command",
    [
        {"type": "history", "room": "lobby", "before": HUGE},
        {"type": "history", "room": "lobby", "before": -1},
        {"type": "history", "room": "lobby", "limit": 10**400},
        {"type": "join", "room": "other", "history": HUGE},
        {"type": "join", "room": "other", "history": -5},
        {"type": "message", "text": "hi", "ref": 10**30},
        {"type": "message", "text": "hi", "ref": -HUGE - 5},
    ],
    ids=[
        "before-2^63",
        "before-negative",
        "limit-10^400",
        "join-history-2^63",
        "join-negative",
        "ref-10^30",
        "ref-negative-huge",
    ],
)
async def test_out_of_range_numbers_get_bad_request(
    client: Client, caplog: pytest.LogCaptureFixture, command: dict[str, Any]
) -> None:
    """An integer out of range gets an error event, and the socket carries on."""
    caplog.set_level(logging.INFO)
    alice = await join(client, "alice")
    await alice.send(json.dumps(command))
    error = await alice.until_type("error")
    assert error["code"] == "bad_request", error
    await alice.send_json(type="ping")
    assert (await alice.until_type("pong"))["type"] == "pong"
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"message","text":"x","zzz":' + DEEP + "}",
        '{"type":"message","text":"x","zzz":' + '{"a":' * 2500 + "1" + "}" * 2500 + "}",
        DEEP,
    ],
    ids=["deep-array-in-unknown-field", "deep-object", "deep-top-level"],
)
async def test_deep_nesting_gets_bad_json(
    client: Client, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    """Nesting past the decoder's limit is refused before decoding, with an error event."""
    alice = await join(client, "alice")
    await alice.send(frame)
    error = await alice.until_type("error")
    assert error["code"] in {"bad_json", "bad_request"}, error
    await alice.send_json(type="ping")
    assert (await alice.until_type("pong"))["type"] == "pong"
    no_tracebacks(caplog)


async def api_status(client: Client, method: str, path: str, body: str) -> tuple[int, Any]:
    headers = {**ADMIN_AUTH, "Content-Type": "application/json"}
    async with client.request(method, "/admin/api/" + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("mutes", f'{{"user_id": {HUGE}}}'),
        ("mutes", f'{{"user_id": {10**400}, "duration": "1m"}}'),
        ("bans", '{"name": "x", "duration": ' + str(10**400) + "}"),
        ("bans", '{"name": "x", "duration": 1e400}'),
        ("bans", f'{{"conn_id": {HUGE}}}'),
        ("kick", f'{{"user_id": {HUGE}}}'),
        ("mutes", '{"name": "x", "zzz": ' + DEEP + "}"),
    ],
    ids=[
        "mute-user-2^63",
        "mute-user-10^400",
        "ban-duration-10^400",
        "ban-duration-1e400",
        "ban-conn-2^63",
        "kick-user-2^63",
        "deep-body",
    ],
)
async def test_api_refuses_out_of_range_numbers_with_400(
    client: Client, caplog: pytest.LogCaptureFixture, path: str, body: str
) -> None:
    """Huge numbers and deep bodies get 400 and leave no mute, ban or audit entry behind."""
    status, data = await api_status(client, "POST", path, body)
    assert status == 400, data
    assert data["error"]["code"] in {"bad_request", "bad_json"}
    for listing in ("mutes", "bans"):
        _, current = await api_status(client, "GET", listing, "")
        assert current[listing] == []
    _, audit = await api_status(client, "GET", "audit", "")
    assert audit["entries"] == []
    no_tracebacks(caplog)


def test_unexpected_errors_log_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The receive loop's guard logs one line without a traceback, then holds back repeats."""
    reporter = CrashReporter()
    with caplog.at_level(logging.ERROR, logger="chatserver.guard"):
        for _ in range(200):
            reporter.report(OverflowError("Python int too large"), "a text frame")
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.exc_info is None
    assert "OverflowError" in record.getMessage()


@pytest.mark.parametrize("path", ["bans/%0A%7B", "mutes/x%0Ay", "no%0Asuch"])
async def test_api_paths_with_a_newline_get_a_json_error(client: Client, path: str) -> None:
    """Even a path with an encoded newline gets the API's JSON 404, not aiohttp's text one."""
    async with client.delete("/admin/api/" + path, headers=ADMIN_AUTH) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] in {"not_found", "no_such_api_route"}


async def test_deep_nesting_on_the_dashboard_push_channel_gets_an_error(client: Client) -> None:
    """The dashboard's push channel answers deeply nested JSON with an error and stays open."""
    await log_in(client)
    live = await client.ws_connect("/admin/live")
    try:
        # Within the channel's 4 KiB frames, past json's recursion limit (1,000).
        await live.send_str('{"type": "view", "q": ' + "[" * 1900 + "]" * 1900 + "}")
        error = await next_of(live, "error")
        assert "nests deeper" in error["message"]
        await live.send_str(json.dumps({"type": "view"}))
        assert "rows" in await next_reset(live)
    finally:
        await live.close()

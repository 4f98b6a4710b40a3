"""Named operators and roles: viewer, moderator, admin, over the API and the dashboard."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from chatserver import admin_cli
from chatserver.app import create_app
from chatserver.errors import SettingsError
from chatserver.settings import build_settings
from dashboard.roles import Operators, check_hash, hash_token
from tests.conftest import ADMIN_TOKEN, Client, join, make_settings

VIEWER_TOKEN = "viewer-token-0123456789"
MOD_TOKEN = "moderator-token-0123456789"
OTHER_MOD_TOKEN = "other-moderator-token-0123"
CHOSEN_TOKEN = "a token ann chose herself"


def operator_specs() -> tuple[str, ...]:
    return (
        f"vera:viewer:{hash_token(VIEWER_TOKEN, slow=False)}",
        f"max:moderator:{hash_token(MOD_TOKEN, slow=False)}",
        f"mo:moderator:{hash_token(OTHER_MOD_TOKEN, slow=False)}",
        f"ann:admin:{hash_token(CHOSEN_TOKEN, slow=True)}",
    )


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    settings = make_settings(tmp_path, admin_token=ADMIN_TOKEN, operators=operator_specs())
    return await aiohttp_client(create_app(settings))


async def call(
    client: Client, token: str, method: str, path: str, body: Any = None, status: int = 200
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.request(method, "/admin/api/" + path, json=body, headers=headers) as resp:
        data: dict[str, Any] = await resp.json()
        assert resp.status == status, data
        return data


async def test_viewer_reads_everything_and_every_change_is_403(client: Client) -> None:
    """A viewer lists connections, bans and the audit log; kick, ban, announce answer 403."""
    peer = await join(client, "alice")
    assert (await call(client, VIEWER_TOKEN, "GET", "connections"))["total"] == 1
    for path in ("bans", "mutes", "audit", "stats", "rooms"):
        await call(client, VIEWER_TOKEN, "GET", path)
    assert (await call(client, VIEWER_TOKEN, "GET", "whoami"))["operator"] == {
        "name": "vera",
        "role": "viewer",
    }
    for path, body in (
        ("kick", {"name": "alice"}),
        ("bans", {"name": "alice"}),
        ("mutes", {"name": "alice"}),
        ("announce", {"text": "hi"}),
        ("bulk", {"op": "kick", "conn_ids": [1]}),
    ):
        error = (await call(client, VIEWER_TOKEN, "POST", path, body, status=403))["error"]
        assert error["code"] == "forbidden"
        assert "vera is a viewer" in error["message"]
        assert "needs moderator" in error["message"]
    await call(client, VIEWER_TOKEN, "GET", "operators", status=403)
    assert (await call(client, VIEWER_TOKEN, "GET", "connections"))["total"] == 1
    await peer.close()


async def test_moderator_acts_and_the_audit_log_names_the_operator(client: Client) -> None:
    """A moderator's kick closes the client; the audit entry says who, not only where from."""
    peer = await join(client, "alice")
    kicked = await call(client, MOD_TOKEN, "POST", "kick", {"name": "alice", "reason": "spam"})
    assert kicked["audit"]["actor"] == "max via api@127.0.0.1"
    assert await peer.closed() == (4500, "spam")
    entries = (await call(client, VIEWER_TOKEN, "GET", "audit"))["entries"]
    assert entries[0]["actor"] == "max via api@127.0.0.1"


async def test_moderators_lift_their_own_bans_and_admins_lift_any(client: Client) -> None:
    """Lifting another operator's ban needs admin; one's own needs moderator."""
    mine = (await call(client, MOD_TOKEN, "POST", "bans", {"name": "spammer1"}, 201))["ban"]
    theirs = await call(client, OTHER_MOD_TOKEN, "POST", "bans", {"name": "spammer2"}, 201)
    error = await call(client, MOD_TOKEN, "DELETE", f"bans/{theirs['ban']['id']}", status=403)
    assert "needs admin" in error["error"]["message"]
    await call(client, MOD_TOKEN, "DELETE", f"bans/{mine['id']}")
    await call(client, CHOSEN_TOKEN, "DELETE", f"bans/{theirs['ban']['id']}")
    assert (await call(client, VIEWER_TOKEN, "GET", "bans"))["bans"] == []


async def test_admins_list_operators_without_their_hashes(client: Client) -> None:
    """GET operators names every operator and role, and no token or hash."""
    listing = await call(client, CHOSEN_TOKEN, "GET", "operators")
    assert listing["operators"] == [
        {"name": "admin", "role": "admin"},
        {"name": "vera", "role": "viewer"},
        {"name": "max", "role": "moderator"},
        {"name": "mo", "role": "moderator"},
        {"name": "ann", "role": "admin"},
    ]
    await call(client, MOD_TOKEN, "GET", "operators", status=403)


async def test_wrong_tokens_are_401_for_every_operator(client: Client) -> None:
    """A token close to a real one, or a hash presented as a token, is refused."""
    for token in (MOD_TOKEN + "x", hash_token(MOD_TOKEN, slow=False), "max"):
        await call(client, token, "GET", "stats", status=401)


async def test_viewer_dashboard_form_posts_are_403(client: Client) -> None:
    """A viewer logged in to the dashboard cannot kick by posting the form itself."""
    peer = await join(client, "alice")
    async with client.get("/admin/login") as page:
        nonce = (await page.text()).split('name="csrf" value="')[1].split('"')[0]
    async with client.post(
        "/admin/login", data={"csrf": nonce, "token": VIEWER_TOKEN}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    async with client.get("/admin/") as page:
        html = await page.text()
    csrf = html.split('name="csrf-token" content="')[1].split('"')[0]
    assert "vera (viewer)" in html
    assert "/admin/action/kick" not in html
    assert "Kick selected" not in html
    async with client.post(
        "/admin/action/kick",
        data={"csrf": csrf, "conn_id": "1"},
        headers={"Accept": "application/json"},
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"
    assert (await call(client, VIEWER_TOKEN, "GET", "connections"))["total"] == 1
    await peer.close()


def test_operators_table_in_the_config_file_becomes_the_setting(tmp_path: Path) -> None:
    """[[operators]] tables load as name:role:hash entries; a bad role fails at start."""
    digest = hash_token(MOD_TOKEN, slow=False)
    config = tmp_path / "chat.toml"
    config.write_text(f'[[operators]]\nname = "max"\nrole = "moderator"\ntoken_hash = "{digest}"\n')
    settings = build_settings({}, {}, str(config))
    assert settings.operators == (f"max:moderator:{digest}",)
    operator = Operators.from_specs(settings.operators, "").authenticate(MOD_TOKEN)
    assert operator is not None
    assert (operator.name, operator.role) == ("max", "moderator")
    with pytest.raises(SettingsError, match="role"):
        Operators.from_specs([f"max:owner:{digest}"], "")
    with pytest.raises(SettingsError, match="token_hash"):
        Operators.from_specs(["max:moderator:plain-token"], "")
    with pytest.raises(SettingsError, match="twice"):
        Operators.from_specs([f"max:moderator:{digest}", f"max:viewer:{digest}"], "")


def test_hash_token_prints_a_token_and_a_matching_hash() -> None:
    """`chatserver admin hash-token` makes a token; its printed hash verifies it."""
    out = io.StringIO()
    assert admin_cli.hash_token_command(False, io.StringIO(), out) == 0
    lines = out.getvalue().splitlines()
    token = lines[0].removeprefix("token = ")
    stored = lines[1].removeprefix('token_hash = "').removesuffix('"')
    assert len(token) >= 43
    assert token not in stored
    assert check_hash(token, stored)
    assert not check_hash(token + "x", stored)
    out = io.StringIO()
    assert admin_cli.hash_token_command(True, io.StringIO(CHOSEN_TOKEN + "\n"), out) == 0
    stored = out.getvalue().strip().removeprefix('token_hash = "').removesuffix('"')
    assert stored.startswith("scrypt$")
    assert check_hash(CHOSEN_TOKEN, stored)

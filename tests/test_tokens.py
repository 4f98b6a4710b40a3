"""Connection tokens (JWT) from an existing site: valid ones identify the user by
``sub`` across reconnects and nodes; every bad one closes 4401 with a reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chatserver.app import create_app
from chatserver.errors import SettingsError
from tests.conftest import ChatServer, Connect, Peer, ServerProcess, both_modes, make_settings
from tests.test_accounts import gone

chat_mode = both_modes()

SECRET = "site-secret-of-at-least-32-bytes!!"


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "site-user-42", "name": "Carol", "exp": int(time.time()) + 300, **extra}


def mint(secret: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(**extra), secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], body: dict[str, Any], key: bytes | None = None) -> str:
    """A token built by hand (what an attacker can send): HMAC-SHA256 with
    ``key``, or no signature at all."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    if key is None:
        return head + "."
    return head + "." + b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


async def with_tokens(chat: ChatServer, **settings: Any) -> None:
    await chat.stop()
    await chat.start(**{"token_secret": SECRET, **settings})


async def refused(connect: Connect, token: str) -> tuple[int | None, str]:
    peer = await connect(json=True, token=token)
    return await peer.closed()


async def test_valid_token_identifies_by_sub_across_reconnects(
    chat: ChatServer, connect: Connect
) -> None:
    """Two connections with tokens of one ``sub`` are one user (on either node)."""
    await with_tokens(chat)
    first = await connect(json=True, token=mint())
    welcome = await first.until_type("welcome")
    assert welcome["identity"] == "token"
    assert welcome["user"]["name"] == "Carol"
    await first.close()
    second = await connect(json=True, token=mint())
    again = await second.until_type("welcome")
    assert again["user"] == welcome["user"]
    other = await connect(json=True, token=mint(sub="someone-else", name="Dave"))
    assert (await other.until_type("welcome"))["user"]["id"] != welcome["user"]["id"]


async def test_token_in_the_first_frame(chat: ChatServer, connect: Connect) -> None:
    """``?auth=frame`` and a first ``auth`` frame keep the token out of the URL."""
    await with_tokens(chat)
    peer = await connect(json=True, auth="frame")
    await peer.send(json.dumps({"type": "auth", "token": mint()}))
    assert (await peer.until_type("welcome"))["identity"] == "token"


async def test_token_rooms_claim_limits_joins(chat: ChatServer, connect: Connect) -> None:
    """A token's ``rooms`` lists the rooms its user may join."""
    await with_tokens(chat)
    peer = await connect(json=True, token=mint(rooms=["lobby", "support"]), room="support")
    assert (await peer.until_type("welcome"))["rooms"] == ["support"]
    await peer.send_json(type="join", room="random")
    assert (await peer.until_type("error"))["code"] == "room_forbidden"
    elsewhere = await connect(json=True, token=mint(sub="other", name="Eve", rooms=["#support"]))
    welcome = await elsewhere.until_type("welcome")
    assert welcome["rooms"] == ["support"], "the first allowed room, not a forbidden lobby"


async def test_expired_token_closes_4401(chat: ChatServer, connect: Connect) -> None:
    """An expired token is refused with its reason."""
    await with_tokens(chat)
    assert await refused(connect, mint(exp=int(time.time()) - 3600)) == (4401, "token expired")


async def test_forged_signature_closes_4401(chat: ChatServer, connect: Connect) -> None:
    """A token signed with another secret is refused."""
    await with_tokens(chat)
    forged = mint(secret="not-the-site-secret-but-long-enough")
    assert await refused(connect, forged) == (4401, "token signature is invalid")


async def test_alg_none_closes_4401(chat: ChatServer, connect: Connect) -> None:
    """An unsigned token (``alg: none``) is refused."""
    await with_tokens(chat)
    token = unsigned({"alg": "none", "typ": "JWT"}, claims())
    assert await refused(connect, token) == (4401, "token algorithm not allowed")


async def test_hs_rs_key_confusion_closes_4401(
    chat: ChatServer, connect: Connect, tmp_path: Path
) -> None:
    """With an RSA public key configured, an HS256 token MACed with that public
    key (the classic confusion attack) is refused; a real RS256 token works."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "site.pem").write_bytes(pem)
    await chat.stop()
    await chat.start(token_public_key=str(tmp_path / "site.pem"))
    attack = unsigned({"alg": "HS256", "typ": "JWT"}, claims(), key=pem)
    assert await refused(connect, attack) == (4401, "token algorithm not allowed")
    good = await connect(json=True, token=jwt.encode(claims(), private, algorithm="RS256"))
    assert (await good.until_type("welcome"))["identity"] == "token"


async def test_es256_token_is_accepted(chat: ChatServer, connect: Connect) -> None:
    """An EC P-256 public key (as PEM text) verifies ES256 tokens."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    await chat.stop()
    await chat.start(token_public_key=pem.decode())
    peer = await connect(json=True, token=jwt.encode(claims(), private, algorithm="ES256"))
    assert (await peer.until_type("welcome"))["identity"] == "token"


async def test_missing_sub_closes_4401(chat: ChatServer, connect: Connect) -> None:
    """A token without ``sub`` is refused."""
    await with_tokens(chat)
    token = jwt.encode({"name": "x", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert await refused(connect, token) == (4401, "token has no 'sub' claim")


async def test_oversized_token_closes_4401(chat: ChatServer, connect: Connect) -> None:
    """A token above 4 KiB is refused before it is parsed."""
    await with_tokens(chat)
    assert await refused(connect, mint(padding="x" * 5000)) == (
        4401,
        "token is larger than 4096 bytes",
    )


async def test_token_policy_refuses_guests(chat: ChatServer, connect: Connect) -> None:
    """With --auth token a client without a token is closed 4401; one with a token chats."""
    await with_tokens(chat, auth="token")
    guest: Peer = await connect()
    assert await guest.closed() == (4401, "this chat needs a token from its site")
    member = await connect(json=True, token=mint())
    welcome = await member.until_type("welcome")
    assert welcome["identity"] == "token"
    await gone(chat, member, welcome["user"]["id"])
    resumed = await connect(json=True, session=welcome["session"])
    assert (await resumed.until_type("welcome"))["identity"] == "token"
    login = await connect(json=True, auth="frame")
    await login.send(json.dumps({"type": "auth", "name": "x", "password": "whatever!"}))
    assert await login.closed() == (4401, "this chat takes tokens from its site only")


PASSWORDS = ("registered-secret-9", "guessed-secret-7")


async def test_tokens_never_reach_the_log(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """Neither a good nor a bad token, nor a password, appears in the server's
    output (access log included)."""
    server = server_process("--token-secret", SECRET, "--log-level", "DEBUG")
    good, bad = mint(), mint(secret="wrong-secret-wrong-secret-wrong!!")
    for token in (good, bad):
        async with http.ws_connect(server.url(token=token), protocols=("chat.v1",)) as ws:
            await asyncio.wait_for(ws.receive(), 5)
    # Passwords neither: a registration and a failed login.
    async with http.ws_connect(server.url(name="pat")) as ws:
        await ws.send_str("/register " + PASSWORDS[0])
        await ws.send_str("/login pat " + PASSWORDS[1])
        while "wrong name or password" not in (await asyncio.wait_for(ws.receive(), 5)).data:
            pass
    server.stop()
    output = "".join(server.output)
    assert "failed login" in output
    assert "  Sign-in:      --auth guests; site tokens: HMAC\n" in output
    assert SECRET not in output
    for password in PASSWORDS:
        assert password not in output
    assert "token signature is invalid" in output
    assert "token=***" in output
    for token in (good, bad):
        assert token not in output
        assert token.split(".")[2] not in output


async def test_audience_is_checked_when_configured(chat: ChatServer, connect: Connect) -> None:
    """With --token-audience a token for another audience (or none) is refused."""
    await with_tokens(chat, token_audience="chat.example.com")
    assert await refused(connect, mint(aud="billing.example.com")) == (
        4401,
        "token is for another audience",
    )
    assert await refused(connect, mint()) == (4401, "token has no 'aud' claim")
    peer = await connect(json=True, token=mint(aud="chat.example.com"))
    assert (await peer.until_type("welcome"))["identity"] == "token"


async def test_resume_with_a_new_token_applies_its_rooms(
    chat: ChatServer, connect: Connect
) -> None:
    """A resume that brings a newer token takes that token's ``rooms``: a room
    it no longer lists is left, and joining it is refused."""
    await with_tokens(chat)
    first = await connect(json=True, token=mint(rooms=["lobby", "support"]), room="support")
    welcome = await first.until_type("welcome")
    await first.send_json(type="join", room="lobby")
    await first.until_type("who")
    await gone(chat, first, welcome["user"]["id"])
    back = await connect(json=True, session=welcome["session"], token=mint(rooms=["lobby"]))
    again = await back.until_type("welcome")
    assert (again["resumed"], again["rooms"]) == (True, ["lobby"])
    await back.send_json(type="join", room="support")
    assert (await back.until_type("error"))["code"] == "room_forbidden"
    await gone(chat, back, welcome["user"]["id"])
    moved = await connect(json=True, session=welcome["session"], token=mint(rooms=["help"]))
    assert (await moved.until_type("welcome"))["rooms"] == ["help"]


async def test_token_with_an_invalid_room_closes_4401(chat: ChatServer, connect: Connect) -> None:
    """A token whose ``rooms`` names a room that cannot exist is refused as a
    whole, at connect and on refresh."""
    await with_tokens(chat)
    assert await refused(connect, mint(rooms=["no such room!"])) == (4401, "token rooms invalid")
    peer = await connect(json=True, token=mint())
    await peer.until_type("welcome")
    await peer.send_json(type="refresh", token=mint(rooms=["lobby", "../etc"]))
    error = await peer.until_type("error")
    assert (error["code"], error["message"]) == ("token_invalid", "token rooms invalid")


async def test_who_of_a_room_the_token_forbids_is_refused(
    chat: ChatServer, connect: Connect
) -> None:
    """`who` of a room the token's ``rooms`` does not list gets room_forbidden."""
    await with_tokens(chat)
    insider = await connect(json=True, token=mint(sub="staff-1", name="Sam"), room="support")
    await insider.until_type("welcome")
    peer = await connect(json=True, token=mint(rooms=["lobby"]))
    await peer.until_type("welcome")
    await peer.send_json(type="who", room="support")
    assert (await peer.until_type("error"))["code"] == "room_forbidden"
    await peer.send_json(type="who", room="lobby")
    assert (await peer.until_type("who"))["room"] == "lobby"


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1()])
def test_es256_refuses_keys_on_other_curves(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    """Only a P-256 key verifies ES256: another curve is a settings error at start."""
    pem = (
        ec.generate_private_key(curve)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SettingsError, match=r"ES256 needs a P-256 \(secp256r1\) key"):
        create_app(make_settings(tmp_path, token_public_key=pem.decode()))

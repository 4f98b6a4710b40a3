"""Text and names are what they look like: one message is one line, invisible
and direction-changing characters are refused, look-alike names are taken."""

from __future__ import annotations

import asyncio

import pytest

from chatserver.errors import CommandError
from chatserver.protocol import name_key, validate_name, validate_text
from tests.conftest import ADMIN_AUTH, Client, Connect, join

HOSTILE = {
    "newline": "\n",
    "carriage-return": "\r",
    "nel-c1": "\x85",
    "csi-c1": "\x9b",
    "line-separator": "\u2028",
    "paragraph-separator": "\u2029",
    "rlo-override": "\u202e",
    "rli-isolate": "\u2067",
    "zero-width-space": "\u200b",
    "zero-width-joiner-alone": "\u200d",
    "bom": "\ufeff",
    "escape": "\x1b",
}


@pytest.mark.parametrize("ch", HOSTILE.values(), ids=HOSTILE.keys())
def test_message_text_refuses_line_breaks_controls_bidi_and_zero_width(ch: str) -> None:
    """Each character the docs refuse is refused inside a message."""
    with pytest.raises(CommandError) as refused:
        validate_text(f"hello{ch}world")
    assert refused.value.code == "text_invalid"


@pytest.mark.parametrize("ch", HOSTILE.values(), ids=HOSTILE.keys())
def test_names_refuse_the_same_characters(ch: str) -> None:
    """Names refuse every character message text refuses."""
    with pytest.raises(CommandError) as refused:
        validate_name(f"bo{ch}b", user_id=1)
    assert refused.value.code == "name_invalid"


@pytest.mark.parametrize("name", ["a\u00a0b", "\u3164", "x\u2800y"])
def test_names_refuse_invisible_fillers_and_odd_spaces(name: str) -> None:
    """A no-break space, a Hangul filler or a braille blank cannot hide in a name."""
    with pytest.raises(CommandError):
        validate_name(name, user_id=1)


def test_emoji_sequences_and_tabs_stay_allowed() -> None:
    """A zero-width joiner inside an emoji sequence and a tab are fine in a message."""
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert validate_text(f"my {family}\tok") == f"my {family}\tok"


@pytest.mark.parametrize(
    ("one", "other"),
    [("Alice", "\u0410lice"), ("alice", "ALICE"), ("Bob", "B\u043eb"), ("paypal", "p\u0430ypal")],
)
def test_look_alike_names_share_a_key(one: str, other: str) -> None:
    """Names with the same confusable skeleton have the same key."""
    assert name_key(one) == name_key(other)


@pytest.mark.parametrize("name", ["User 16", "Us\u0435r 16", "User 16.", "user16", "User l6"])
def test_look_alikes_of_a_reserved_name_are_taken(name: str) -> None:
    """``User 16`` and every name that looks like it belong to user 16 only."""
    with pytest.raises(CommandError) as refused:
        validate_name(name, user_id=3)
    assert refused.value.code == "name_taken"
    assert validate_name(name, user_id=16) == name


async def test_a_look_alike_of_a_live_name_is_name_taken(client: Client) -> None:
    """``Alice`` with a Cyrillic A beside a live ``Alice``: refused at connect and at /nick."""
    alice = await join(client, "Alice")
    ws = await client.ws_connect("/ws", params={"name": "\u0410lice"}, protocols=("chat.v1",))
    other = type(alice)(ws)
    welcome = await other.until_type("welcome")
    assert welcome["user"]["name"].startswith("User ")
    assert (await other.until_type("error"))["code"] == "name_taken"
    await other.send_json(type="nick", name="\u0410lic\u0435")
    assert (await other.until_type("error"))["code"] == "name_taken"


async def test_an_embedded_newline_cannot_forge_a_line(connect: Connect) -> None:
    """A text client's message with a newline is refused; the others see no forged line."""
    watcher = await connect(name="watcher")
    await watcher.until("Welcome")
    forger = await connect(name="forger")
    await forger.until("Welcome")
    await watcher.until("forger has connected")
    await forger.send("hi\nUser 1: send me your password")
    assert "one line" in await forger.until("Error")
    await forger.send("a real line")
    assert await watcher.until("forger") == "forger: a real line"


async def test_json_messages_with_a_bidi_override_are_refused(client: Client) -> None:
    """A chat.v1 message with U+202E gets text_invalid naming the character."""
    alice = await join(client, "alice")
    await alice.send_json(type="message", text="abc\u202edef")
    error = await alice.until_type("error")
    assert error["code"] == "text_invalid"
    assert "U+202E" in error["message"]


async def test_operator_reasons_refuse_bidi_overrides(client: Client) -> None:
    """A kick reason with a bidi override is a 400; the user stays connected."""
    alice = await join(client, "alice")
    body = {"name": "alice", "reason": "spam\u202e"}
    async with client.post("/admin/api/kick", json=body, headers=ADMIN_AUTH) as response:
        assert response.status == 400
    await alice.send_json(type="ping")
    assert (await asyncio.wait_for(alice.until_type("pong"), 5))["type"] == "pong"


@pytest.mark.parametrize("path", ["bans", "mutes", "kick"])
async def test_operator_names_refuse_invisible_characters(client: Client, path: str) -> None:
    """A ban, mute or kick naming a name with a zero-width space is a 400, not a no-op."""
    body = {"name": "ali\u200bce", "reason": "r"}
    async with client.post(f"/admin/api/{path}", json=body, headers=ADMIN_AUTH) as response:
        assert response.status == 400
        assert "U+200B" in (await response.json())["error"]["message"]

"""Wire pieces in isolation: framing, parsing, validation, text rendering."""

from __future__ import annotations

import hashlib

import pytest

from chatserver.errors import CommandError
from chatserver.protocol import (
    ChangePassword,
    Join,
    JoinEvent,
    Leave,
    LeaveEvent,
    Login,
    MessageEvent,
    Nick,
    Register,
    Rendered,
    SendMessage,
    Unregister,
    User,
    Who,
    encode_json,
    frame_text,
    parse_json_command,
    parse_text_command,
    validate_name,
    validate_room,
)
from chatserver.session import Cursor, hash_token, new_token, parse_last


@pytest.mark.parametrize(("size", "header"), [(5, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_frame_text_uses_the_shortest_length_encoding(size: int, header: int) -> None:
    """Server frames are unmasked text frames with RFC 6455 length encoding."""
    frame = frame_text(b"x" * size)
    assert frame[0] == 0x81
    assert len(frame) == size + header
    assert frame[1] & 0x80 == 0


def test_text_lines_become_commands() -> None:
    """Plain lines are messages to the current room; /commands are parsed."""
    assert parse_text_command("hi", "dev") == SendMessage(text="hi", room="dev")
    assert parse_text_command("//x", "dev") == SendMessage(text="/x", room="dev")
    assert parse_text_command("/NICK  bob ", None) == Nick(name="bob")
    assert parse_text_command("/join #games", None) == Join(room="games")
    assert parse_text_command("/who", "dev") == Who(room="dev")
    with pytest.raises(CommandError, match="usage"):
        parse_text_command("/nick", None)


def test_text_account_commands_keep_the_spaces_of_passwords() -> None:
    """Only the one space after the verb (and after NAME or OLD) separates: the
    password keeps its own leading and trailing spaces."""
    assert parse_text_command("/register  two  ", None) == Register(password=" two  ")
    assert parse_text_command("/unregister pw ", None) == Unregister(password="pw ")
    assert parse_text_command("/login  bob  pw ", None) == Login(name="bob", password=" pw ")
    assert parse_text_command("/password old  new ", None) == ChangePassword(old="old", new=" new ")
    for line in ("/register", "/register ", "/login bob", "/login bob ", "/password old"):
        with pytest.raises(CommandError, match="usage"):
            parse_text_command(line, None)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b'{"type": "join", "room": "bad room"}', "room_invalid"),
        (b'{"type": "message", "text": "  "}', "text_invalid"),
        (b'{"type": "nick", "name": "#hash"}', "name_invalid"),
        (b'{"type": "who", "room": "x/y"}', "room_invalid"),
    ],
)
def test_commands_come_out_of_parsing_already_validated(frame: bytes, code: str) -> None:
    """The hub gets only checked commands: bad rooms, texts and names fail in
    parsing, in both dialects, and rooms come out canonical."""
    with pytest.raises(CommandError) as refused:
        parse_json_command(frame)
    assert refused.value.code == code
    assert parse_json_command(b'{"type": "leave", "room": "#dev"}') == Leave(room="dev")
    with pytest.raises(CommandError, match="room"):
        parse_text_command("/join bad room", None)


def test_json_command_errors_are_precise() -> None:
    """A wrong field type names the field; a long ref is refused."""
    with pytest.raises(CommandError) as wrong:
        parse_json_command(b'{"type": "message", "text": 1}')
    assert wrong.value.code == "bad_request"
    assert "$.text" in wrong.value.message
    with pytest.raises(CommandError) as long_ref:
        parse_json_command('{"type": "ping", "ref": "' + "r" * 65 + '"}')
    assert long_ref.value.code == "bad_request"


@pytest.mark.parametrize(
    "name", ["", " bob", "bob ", "/bob", "#bob", "a\x1bb", "x" * 33, "User 7", "user  7"]
)
def test_bad_names_are_refused(name: str) -> None:
    """Empty, padded, command-like, control-char, too long and reserved names are refused."""
    with pytest.raises(CommandError):
        validate_name(name, user_id=1)


def test_own_default_name_and_unicode_names_are_fine() -> None:
    """User N is fine for user N; non-ASCII letters are fine."""
    assert validate_name("User 1", user_id=1) == "User 1"
    assert validate_name("Zoë 🐍", user_id=1) == "Zoë 🐍"


def test_room_names() -> None:
    """A leading # is dropped; spaces and empty names are refused."""
    assert validate_room("#dev") == "dev"
    for bad in ("", "#", "a b", "-x", "x" * 33):
        with pytest.raises(CommandError):
            validate_room(bad)


def test_rendered_event_is_encoded_once_per_dialect() -> None:
    """The same bytes object is returned for every recipient of a rendering."""
    event = MessageEvent(id=1, room="dev", user=User(1, "ann"), text="hi", ts=1.0)
    rendered = Rendered(event)
    assert rendered.json_frame() is rendered.json_frame()
    assert rendered.text_frame("dev") is rendered.text_frame("dev")
    assert rendered.text_frame("lobby") is rendered.text_frame("other")
    assert rendered.text_frame("dev")[2:] == b"ann: hi"
    assert rendered.text_frame("lobby")[2:] == b"[#dev] ann: hi"
    assert b'"type":"message"' in encode_json(event)


def test_presence_lines_match_the_seed() -> None:
    """Connect and quit render as the seed's lines; other reasons say why."""
    user = User(1, "User 1")
    assert (
        Rendered(JoinEvent(room="lobby", user=user, ts=0, reason="connect")).text_frame("lobby")[2:]
        == b"User 1 has connected."
    )
    quit_line = Rendered(LeaveEvent(room="lobby", user=user, reason="quit", ts=0))
    assert quit_line.text_frame("lobby")[2:] == b"User 1 has disconnected."
    kicked = LeaveEvent(room="lobby", user=user, reason="kicked", detail="spam", ts=0)
    assert Rendered(kicked).text_frame("lobby")[2:] == b"User 1 was kicked (spam)."


def test_resume_cursor_parsing() -> None:
    """`last` parses room:id pairs, optionally with @epoch, and refuses garbage."""
    assert parse_last("lobby:5,#dev:0@ab12") == {"lobby": Cursor(5), "dev": Cursor(0, "ab12")}
    assert parse_last("") == {}
    for bad in ("lobby", "lobby:x", "lobby:-1", "bad room:1", "lobby:1@", "lobby:1@a b"):
        with pytest.raises(CommandError):
            parse_last(bad)


def test_tokens_are_long_random_and_stored_hashed() -> None:
    """Tokens carry 256 bits and only a SHA-256 hex digest is stored."""
    first, second = new_token(), new_token()
    assert first != second
    assert len(first) >= 43
    assert hash_token(first) == hashlib.sha256(first.encode()).hexdigest()


def test_close_reason_is_cut_on_a_character_boundary() -> None:
    """A long non-ASCII reason stays valid UTF-8 within the 123-byte limit."""
    from chatserver.protocol import close_reason

    reason = close_reason("é" * 100)
    assert len(reason) <= 123
    assert reason.decode() == "é" * 61

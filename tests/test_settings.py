"""Settings: flags beat environment, environment beats the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatserver.errors import SettingsError
from chatserver.settings import Settings, build_settings, parse_args


def test_defaults() -> None:
    """With nothing given the documented defaults apply."""
    settings = build_settings({}, environ={})
    assert settings == Settings()
    assert settings.port == 8765
    assert settings.host == "127.0.0.1"


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    """A flag wins over CHAT_*, which wins over the config file."""
    config = tmp_path / "chat.toml"
    config.write_text('port = 1000\nrate-limit = 2.5\nallowed_origins = ["https://a.example"]\n')
    env = {"CHAT_PORT": "2000", "CHAT_HEARTBEAT": "7", "CHAT_HISTORY": "off"}
    settings = build_settings({"port": "3000"}, environ=env, config_path=str(config))
    assert settings.port == 3000
    assert settings.heartbeat == 7.0
    assert settings.rate_limit == 2.5
    assert settings.history is False
    assert settings.allowed_origins == ("https://a.example",)
    from_env = build_settings({}, environ=env, config_path=str(config))
    assert from_env.port == 2000


def test_parse_args_names_match_design() -> None:
    """Every flag named in DESIGN.md parses into its setting."""
    settings = parse_args(
        [
            "--host", "0.0.0.0", "--port", "9000", "--admin-token", "s3cret",
            "--db", "/tmp/x.db",
            "--allowed-origins", "https://a.example,https://b.example",
            "--max-message-bytes", "100", "--rate-limit", "0", "--rate-burst", "5",
            "--max-connections-per-ip", "0", "--outbound-buffer-bytes", "4096",
            "--heartbeat", "15",
        ]
    )  # fmt: skip
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert (settings.max_message_bytes, settings.rate_limit, settings.rate_burst) == (100, 0, 5)
    assert settings.outbound_buffer_bytes == 4096
    assert settings.heartbeat == 15


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": "x"}, "invalid value for port"),
        ({"heartbeat": "-1"}, "must not be negative"),
        ({"redis_url": "localhost:6379"}, "redis_url must start with"),
    ],
)
def test_bad_values_are_clear_errors(flags: dict[str, str], message: str) -> None:
    """A bad value is a SettingsError naming the setting, not a traceback."""
    with pytest.raises(SettingsError, match=message):
        build_settings(flags, environ={})


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    """A typo in the config file is reported, not silently ignored."""
    config = tmp_path / "chat.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        build_settings({}, environ={}, config_path=str(config))

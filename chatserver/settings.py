"""Server settings: command-line flags beat ``CHAT_*`` environment variables,
which beat the optional TOML config file, which beats the defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import SettingsError

ENV_PREFIX = "CHAT_"


def default_db_path() -> str:
    """Where history lives when ``--db`` is not given (XDG data directory)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "chatserver" / "chat.db")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be told. ``0`` turns a limit off."""

    host: str = "127.0.0.1"
    port: int = 8765
    admin_token: str = ""
    db: str = ""  # "" means default_db_path(); ":memory:" keeps nothing on disk
    redis_url: str = ""
    allowed_origins: tuple[str, ...] = ()
    # Host headers accepted besides localhost, IP literals and --host (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    max_message_bytes: int = 16 * 1024
    rate_limit: float = 10.0
    rate_burst: int = 20
    max_connections_per_ip: int = 64  # counted from accept (chatserver/admission.py)
    max_connections: int = -1  # total; -1: the open-file limit less headroom
    request_timeout: float = 10.0  # seconds to send a complete request head after connecting
    outbound_buffer_bytes: int = 1024 * 1024
    heartbeat: float = 30.0
    history: bool = True
    history_max_messages: int = 10_000  # per room
    history_max_age: float = 30 * 86400.0  # seconds
    session_ttl: float = 86400.0  # how long a resume token stays valid after disconnect
    shutdown_timeout: float = 5.0
    presence_threshold: int = 500  # rooms larger than this get no join/leave notices
    max_rooms_per_connection: int = 20
    trusted_proxy: bool = False  # take the client address from X-Forwarded-For
    log_level: str = "INFO"

    @property
    def db_path(self) -> str:
        return self.db or default_db_path()


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, value: Any) -> Any:
    """Turn a raw value from a flag, the environment or TOML into the field's type."""
    default = _FIELDS[name].default
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _BOOL_TRUE:
                return True
            if text in _BOOL_FALSE:
                return False
            raise ValueError(value)
        if isinstance(default, tuple):
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(str(item).strip() for item in items if str(item).strip())
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"invalid value for {name}: {value!r}") from exc


def _validate(settings: Settings) -> Settings:
    numeric = ("max_message_bytes", "rate_limit", "rate_burst", "max_connections_per_ip")
    timing = ("heartbeat", "session_ttl", "request_timeout")
    for name in (*numeric, "outbound_buffer_bytes", *timing, "port"):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{name} must not be negative")
    if settings.max_connections < -1:
        raise SettingsError("max_connections is -1 (automatic), 0 (off) or a number")
    if settings.port > 65535:
        raise SettingsError("port must be at most 65535")
    if settings.redis_url:
        raise SettingsError(
            "Redis mode (--redis-url) is not implemented yet; see docs/operations.md"
        )
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per setting; unset flags stay ``None``."""
    parser.add_argument("--config", help="TOML config file (keys are the setting names)")
    for name, field in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"(default: {field.default!r}; env {env_name(name)})",
        )


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    return {key.replace("-", "_"): value for key, value in data.items()}


def build_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Merge file, environment and flags (in rising priority) into Settings."""
    environ = os.environ if environ is None else environ
    config_path = config_path or environ.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, Any] = load_config_file(config_path) if config_path else {}
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise SettingsError(f"unknown setting(s) in {config_path}: {', '.join(sorted(unknown))}")
    for name in _FIELDS:
        if env_name(name) in environ:
            raw[name] = environ[env_name(name)]
    for name, value in (flags or {}).items():
        if name in _FIELDS and value is not None:
            raw[name] = value
    values = {name: _convert(name, value) for name, value in raw.items()}
    return _validate(Settings(**values))


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="chatserver", description="WebSocket chat server")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return build_settings(vars(args), config_path=args.config)

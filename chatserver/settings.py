"""Server settings: command-line flags beat ``CHAT_*`` environment variables,
which beat the optional TOML config file, which beats the defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
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
    # Named dashboard/API operators as "name:role:token_hash" (TOML: [[operators]] tables).
    operators: tuple[str, ...] = ()
    metrics_addresses: tuple[str, ...] = ()  # may read /metrics without a token
    log_level: str = "INFO"
    node_id: str = ""  # this node's name in Redis mode ("" : host-pid-random)
    redis_prefix: str = "chat"  # every Redis key and channel starts with this
    presence_ttl: float = 30.0  # seconds a dead node's users stay in presence (Redis mode)
    auth: str = "guests"  # guests: anyone talks; registered: guests only read; token: tokens only
    token_secret: str = ""  # HMAC key of connection tokens (JWT HS256/384/512)
    token_public_key: str = ""  # PEM file (or text) of the site's RS256/ES256 key
    token_audience: str = ""  # the "aud" tokens must carry ("": not checked)
    token_leeway: float = 30.0  # seconds of clock difference allowed around a token's exp
    restricted_rooms: tuple[str, ...] = ()  # rooms only logged-in users may join
    login_attempts: int = 5  # failed logins per name per minute (4x per address)

    @property
    def db_path(self) -> str:
        return self.db or default_db_path()


# One line of ``chatserver --help`` per setting: field name -> (group, text).
# Every field needs an entry (tests/test_startup.py checks it); groups are
# shown in the order of GROUPS.
GROUPS: tuple[str, ...] = (
    "listening",
    "admin",
    "storage",
    "several nodes (Redis mode)",
    "limits",
    "connections",
    "who is who",
    "logging",
)
HELP: dict[str, tuple[str, str]] = {
    "host": ("listening", "address to listen on (0.0.0.0: all)"),
    "port": ("listening", "TCP port to listen on (0: any free port)"),
    "allowed_origins": ("listening", "more browser origins allowed to open the chat socket"),
    "trusted_proxy": ("listening", "trust X-Forwarded-For/-Proto from a reverse proxy"),
    "allowed_hosts": ("listening", "more Host names accepted besides --host and localhost"),
    "admin_token": ("admin", "secret of the dashboard and admin API (unset: new per run)"),
    "operators": ("admin", "operators as name:role:hash (admin hash-token)"),
    "metrics_addresses": ("admin", "addresses or networks that may read /metrics"),
    "db": ("storage", "SQLite file (unused with Redis)"),
    "redis_url": ("several nodes (Redis mode)", "run as one of several nodes on this Redis"),
    "redis_prefix": ("several nodes (Redis mode)", "prefix of every Redis key and channel"),
    "node_id": ("several nodes (Redis mode)", "this node's name (default: host-pid-random)"),
    "presence_ttl": ("several nodes (Redis mode)", "seconds until a dead node's users leave"),
    "history": ("storage", "store chat messages (false: keep none)"),
    "history_max_messages": ("storage", "messages kept per room (0: no limit)"),
    "history_max_age": ("storage", "seconds a message is kept (0: no limit)"),
    "session_ttl": ("storage", "seconds a resume token lives after disconnect"),
    "max_message_bytes": ("limits", "largest accepted message or frame, in bytes"),
    "rate_limit": ("limits", "messages per second per connection (0: off)"),
    "rate_burst": ("limits", "messages sent at once above the rate"),
    "max_connections_per_ip": ("limits", "open connections per client address (0: off)"),
    "max_connections": ("limits", "open connections in all (-1: from the open-file limit)"),
    "max_rooms_per_connection": ("limits", "rooms one connection may be in at once"),
    "presence_threshold": ("limits", "room size above which join/leave is not announced"),
    "outbound_buffer_bytes": ("connections", "send buffer per connection before closing 4000"),
    "heartbeat": ("connections", "seconds between pings; silent peers drop (0: off)"),
    "request_timeout": ("connections", "seconds a new connection has to send its request"),
    "shutdown_timeout": ("connections", "seconds to let clients close on shutdown"),
    "log_level": ("logging", "DEBUG, INFO, WARNING or ERROR"),
    "auth": ("who is who", "who may talk: guests, registered or token (see docs)"),
    "token_secret": ("who is who", "HMAC secret of your site's connection tokens (JWT)"),
    "token_public_key": ("who is who", "PEM file of your site's RS256/ES256 token key"),
    "token_audience": ("who is who", "the 'aud' claim tokens must carry (unset: not checked)"),
    "token_leeway": ("who is who", "seconds of clock skew allowed around a token's exp"),
    "restricted_rooms": ("who is who", "rooms only registered or token users may join"),
    "login_attempts": ("who is who", "failed logins per name per minute (0: no limit)"),
}
AUTH_POLICIES: tuple[str, ...] = ("guests", "registered", "token")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

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
    if settings.log_level.upper() not in LOG_LEVELS:
        raise SettingsError(
            f"invalid value for log_level: {settings.log_level!r} (use {', '.join(LOG_LEVELS)})"
        )
    if settings.redis_url and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise SettingsError("redis_url must start with redis://, rediss:// or unix://")
    if settings.auth not in AUTH_POLICIES:
        raise SettingsError(f"auth must be one of {', '.join(AUTH_POLICIES)}")
    if settings.auth == "token" and not (settings.token_secret or settings.token_public_key):
        raise SettingsError("auth token needs token_secret or token_public_key")
    if settings.login_attempts < 0:
        raise SettingsError("login_attempts must not be negative")
    if not 0 <= settings.token_leeway <= 3600:
        raise SettingsError("token_leeway must be 0 to 3600 seconds")
    if not 1 <= settings.presence_ttl <= 600:
        raise SettingsError("presence_ttl must be between 1 and 600 seconds")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{0,64}", settings.node_id + settings.redis_prefix):
        raise SettingsError("node_id and redis_prefix take letters, digits and _ . : - only")
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per setting, grouped as in HELP; unset flags stay ``None``."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    groups["listening"].add_argument(
        "--config", metavar="FILE", help="TOML config file (keys are the setting names)"
    )
    for name, field in _FIELDS.items():
        group, text = HELP.get(name, ("other", ""))
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        groups[group].add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=_metavar(field.default),
            help=f"{text} [{_show_default(name, field.default)}]",
        )


def _metavar(default: Any) -> str:
    if isinstance(default, bool):
        return "BOOL"
    if isinstance(default, int | float):
        return "N"
    return "LIST" if isinstance(default, tuple) else "TEXT"


def _show_default(name: str, default: Any) -> str:
    if name == "db":
        return "~/.local/share/chatserver/chat.db"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default) or "none"
    return str(default) if default != "" else "unset"


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
    raw = {key.replace("-", "_"): value for key, value in data.items()}
    if "operators" in raw:
        raw["operators"] = operator_specs(raw["operators"], path)
    return raw


def operator_specs(value: Any, path: str) -> list[str]:
    """``[[operators]]`` tables (name, role, token_hash) as "name:role:hash" entries."""
    if not isinstance(value, list):
        raise SettingsError(f"{path}: operators must be a list of [[operators]] tables")
    specs: list[str] = []
    for table in value:
        if isinstance(table, str):
            specs.append(table)
            continue
        if not isinstance(table, dict) or set(table) - {"name", "role", "token_hash"}:
            raise SettingsError(f"{path}: each [[operators]] has name, role and token_hash")
        specs.append(":".join(str(table.get(k, "")) for k in ("name", "role", "token_hash")))
    return specs


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


HELP_WIDTH = 100  # wide enough for one line per flag


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatserver",
        usage="chatserver [FLAGS]\n       chatserver admin COMMAND [...]",
        description=(
            "WebSocket chat server: a browser chat page at /, the chat socket at /ws and the\n"
            "admin dashboard at /admin/. Every flag is also an environment variable\n"
            "CHAT_<NAME> and a key of the --config file (flags beat the environment, which\n"
            "beats the file). 0 turns a limit off. Defaults are in [brackets]."
        ),
        epilog=(
            "subcommand:\n"
            "  chatserver admin COMMAND    operate a running server over its admin API:\n"
            "                              connections, kick, ban, mute, announce, audit, ...\n"
            "                              (chatserver admin --help lists every command)"
        ),
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(
            prog, max_help_position=32, width=HELP_WIDTH
        ),
    )
    add_arguments(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    return build_settings(vars(args), config_path=args.config)

"""Start-up as a new user meets it: the banner, --help, and one clear line
with exit status 2 for every bad value or unusable path."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatserver import admin_cli
from chatserver.preflight import mask_password
from chatserver.settings import GROUPS, HELP, Settings

RUN_TIMEOUT = 30.0
CHATSERVER = (sys.executable, "-m", "chatserver")


def run_chatserver(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHATSERVER, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
        cwd=cwd,
    )


def test_every_setting_has_a_help_entry_in_a_known_group() -> None:
    """Each Settings field has a one-line description in one of GROUPS."""
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert set(HELP) == fields
    assert {group for group, _ in HELP.values()} <= set(GROUPS)
    assert all(text and "\n" not in text for _, text in HELP.values())


def test_help_describes_every_flag_on_one_line_and_names_the_admin_subcommand() -> None:
    """`chatserver --help` gives each flag its description and default on its own line."""
    result = run_chatserver("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, (_group, text) in HELP.items():
        flag = "--" + name.replace("_", "-") + " "
        (line,) = [line for line in lines if line.lstrip().startswith(flag)]
        assert text in line, line
        assert line.rstrip().endswith("]"), line
    for group in GROUPS:
        assert f"{group}:" in lines
    assert "chatserver admin COMMAND" in result.stdout
    assert "CHAT_<NAME>" in result.stdout


def bad_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database\n")
    return [
        (["--db", str(tmp_path)], "is a directory"),
        (["--db", "/dev/null/chat.db"], "/dev/null is not a directory"),
        (["--db", str(not_sqlite)], "is not an SQLite database"),
        (["--log-level", "LOUD"], "invalid value for log_level: 'LOUD'"),
        (["--port", "eighty"], "invalid value for port"),
        (["--port", "70000"], "port must be at most 65535"),
        (["--heartbeat", "-1"], "heartbeat must not be negative"),
        (["--history", "maybe"], "invalid value for history"),
        (["--config", str(tmp_path / "missing.toml")], "cannot read config file"),
    ]


def test_each_bad_value_or_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Directories, paths through files, non-databases and bad values: one line, status 2."""
    for args, words in bad_cases(tmp_path):
        result = run_chatserver(*args, "--admin-token", "x", cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("chatserver: "), result.stderr
        assert words in result.stderr, result.stderr
        assert result.stdout == "", result.stdout


def test_start_up_prints_every_address_and_the_database_path(tmp_path: Path) -> None:
    """The banner names the chat socket, the browser page, the dashboard and the db file."""
    db = tmp_path / "data" / "chat.db"
    proc = subprocess.Popen(
        [*CHATSERVER, "--port", "0", "--db", str(db), "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(6)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(RUN_TIMEOUT)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
    assert lines[0].startswith("Admin token (generated for this run): ")
    started = lines[1]
    assert started.startswith("Server started on ws://127.0.0.1:")
    port = started.rsplit(":", 1)[1]
    assert lines[2:] == [
        f"  Chat socket:  ws://127.0.0.1:{port}/ws",
        f"  Browser page: http://127.0.0.1:{port}/",
        f"  Dashboard:    http://127.0.0.1:{port}/admin/",
        f"  Database:     {db}",
    ]
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:p%40ss@host/1", "redis://alice:***@host/1"),
        ("rediss://host:6380", "rediss://host:6380"),
    ],
)
def test_redis_url_is_printed_without_its_password(url: str, shown: str) -> None:
    """The start-up banner's Redis line never shows the password."""
    assert mask_password(url) == shown


def test_admin_url_without_a_scheme_means_http() -> None:
    """`--url 127.0.0.1:8811` is http://127.0.0.1:8811; a foreign scheme is a usage error."""
    assert admin_cli.api_base("127.0.0.1:8811") == "http://127.0.0.1:8811/admin/api/"
    assert admin_cli.api_base("ws://h:1/ws") == "http://h:1/admin/api/"
    with pytest.raises(admin_cli.AdminError, match="use http://HOST:PORT"):
        admin_cli.server_url("ftp://h:1")


def test_admin_cli_names_an_unreachable_server_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused connection is one line that says so, and exit status 1."""
    from tests.conftest import free_port

    port = free_port()
    assert admin_cli.main(["--url", f"127.0.0.1:{port}", "--token", "x", "stats"]) == 1
    err = capsys.readouterr().err
    assert err == f"chatserver admin: cannot reach http://127.0.0.1:{port}: connection refused\n"

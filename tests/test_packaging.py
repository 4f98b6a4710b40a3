"""Packaging: the wheel and the editable install build without setuptools
warnings, and the wheel holds every template and static file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What setuptools prints when the package configuration is ambiguous or deprecated.
WARNING_MARKERS = ("BuildBackendWarning", "SetuptoolsWarning", "Deprecat", "is absent from")


def pip(*args: str) -> str:
    """Run pip; its whole output, after checking it succeeded without a setuptools warning."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not [marker for marker in WARNING_MARKERS if marker in output], output
    return output


def test_editable_install_prints_no_packaging_warning(tmp_path: Path) -> None:
    """`pip install -e .` (into a scratch target, not this venv) warns about nothing."""
    pip("install", "--no-deps", "--target", str(tmp_path / "site"), "-e", str(REPO))
    assert list((tmp_path / "site").glob("__editable__.chatserver-*.pth"))


def test_wheel_builds_without_warnings_and_holds_templates_and_static_files(
    tmp_path: Path,
) -> None:
    """`pip wheel .` prints no setuptools warning; the wheel lists the pages' files."""
    pip("wheel", "--no-deps", "-w", str(tmp_path), str(REPO))
    (wheel,) = tmp_path.glob("chatserver-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "chatserver/static/index.html",
        "chatserver/static/chat.js",
        "chatserver/static/chat.css",
        "dashboard/templates/base.html",
        "dashboard/templates/dashboard.html",
        "dashboard/templates/login.html",
        "dashboard/static/dashboard.js",
        "dashboard/static/dashboard.css",
        "cli_client.py",
        "chatserver/__main__.py",
    }
    # Every data file the code loads at run time, found in the tree rather than
    # listed (the Lua scripts Redis mode loads were missing from the wheel).
    for pattern in ("chatserver/lua/*.lua", "chatserver/static/*", "dashboard/*/*.*"):
        expected |= {path.relative_to(REPO).as_posix() for path in REPO.glob(pattern)}
    expected = {name for name in expected if "__pycache__" not in name}
    assert expected <= names, sorted(expected - names)
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]

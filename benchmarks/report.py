"""Formatting of RESULTS.md: machine description, numbers, Markdown tables."""

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from benchmarks.server import REPO_ROOT

Run = TypeVar("Run")
PACKAGES = ("aiohttp", "websockets", "python-socketio", "python-engineio", "uvloop", "picows")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    """Installed version of ``package``, or ``-``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def git_commit() -> str:
    """Short commit of the working tree measured, with ``+dirty`` if modified."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def machine_table() -> str:
    """The machine and software the numbers were measured on."""
    rows = [
        ("CPU", f"{cpu_model()}, {os.cpu_count()} cores"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        *((name, version(name)) for name in PACKAGES),
        ("commit", git_commit()),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    return table(("", ""), rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def median(runs: Sequence[Run], metric: Callable[[Run], float]) -> float:
    """Median of ``metric`` over the runs (0 for none)."""
    return statistics.median(metric(r) for r in runs) if runs else 0.0


def rate(value: float) -> str:
    """A per-second figure with thousands separators."""
    return f"{value:,.0f}"


def micros(value: float) -> str:
    """A latency given in microseconds, shown in milliseconds."""
    return f"{value / 1000:.1f} ms"


def mebibytes(value: float) -> str:
    """A byte count in MiB."""
    return f"{value / 2**20:.1f} MiB"


def kibibytes(value: float) -> str:
    """A byte count in KiB."""
    return f"{value / 2**10:.1f} KiB"


def ratio(numerator: float, denominator: float) -> str:
    """``a / b`` as ``N.Nx``, or ``-`` when undefined."""
    return f"{numerator / denominator:.1f}x" if denominator else "-"


def percent(value: float) -> str:
    """A fraction of one core as a percentage."""
    return f"{value * 100:.0f} %"


def listing(values: Sequence[float], shown: Callable[[float], str]) -> str:
    """Every run's value, for the spread next to a median."""
    return ", ".join(shown(v) for v in values)


Metric = tuple[str, Callable[[Run], float], Callable[[float], str]]


def metric_rows(runs: Sequence[Run], metrics: Sequence[Metric[Run]]) -> list[list[str]]:
    """One table row per metric: its name, the median over runs, and every run's value."""
    return [
        [name, shown(median(runs, get)), listing([get(r) for r in runs], shown)]
        for name, get, shown in metrics
    ]

"""Runs too long or too different for ``make bench`` (``make soak``, the ping
flood) write their own file; their latest figures are copied into RESULTS.md
as sections, both when they finish and whenever ``make bench`` rewrites it."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
# (section title, file written by its own command)
SEPARATE_RUNS = (
    ("Soak", "SOAK.md"),
    ("Soak, Redis mode", "SOAK-REDIS.md"),
    ("Ping flood", "FLOOD.md"),
    ("Cluster", "RESULTS-cluster.md"),
)
MARK = " (from benchmarks/"


def sections() -> list[str]:
    """One RESULTS.md section per separate run that has written its file."""
    found = []
    for title, name in SEPARATE_RUNS:
        path = HERE / name
        if path.exists():
            body = path.read_text().split("\n", 1)[1].strip()  # without its "# Title"
            found.append(f"## {title}{MARK}{name})\n\n{body}")
    return found


def refresh_results(results: Path = RESULTS) -> None:
    """Replace RESULTS.md's copies of the separate runs with their latest files."""
    if not results.exists():
        return
    text = results.read_text()
    cut = min((i for title, _ in SEPARATE_RUNS if (i := text.find(f"\n## {title}{MARK}")) >= 0),
              default=len(text))  # fmt: skip
    results.write_text(text[:cut].rstrip("\n") + "\n\n" + "\n\n".join(sections()) + "\n")

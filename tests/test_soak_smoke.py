"""Smoke test of ``make soak`` in a short mode: the checks run and pass on a small load."""

from pathlib import Path

from benchmarks import soak


def test_a_short_soak_passes_every_check(tmp_path: Path) -> None:
    """40 clients, 4 kicked or banned, one SIGTERM restart in 12 s: gap-free, codes right."""
    output = tmp_path / "soak.md"
    argv = ["--seconds", "12", "--clients", "40", "--victims", "4", "--output", str(output)]
    assert soak.main(argv) == 0
    report = output.read_text()
    assert "**Result: PASS.**" in report
    assert "1 restart(s)" in report

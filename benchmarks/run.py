"""Run the benchmark scenarios and write ``benchmarks/RESULTS.md``.

``python -m benchmarks.run`` runs the first six (about 22 minutes on 2 cores);
``--quick`` runs each once at a small size; ``--scenario N`` (repeatable)
picks some. Scenario 3 is compared with scenario 1, so it brings it along.
Scenario 7 (several nodes on one Redis) runs only when asked for, and alone
it writes ``benchmarks/RESULTS-cluster.md``.
"""

import argparse
import datetime
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from benchmarks import cluster_scenario, dashboard_bench, report, scenarios, separate
from benchmarks.limits import raise_open_files_limit

T = TypeVar("T")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
CLUSTER_OUTPUT = DEFAULT_OUTPUT.with_name("RESULTS-cluster.md")
ALL = (1, 2, 3, 4, 5, 6)
# Needs redis-server and our Redis mode, and takes about 15 minutes: opt-in.
CLUSTER = cluster_scenario.NUMBER


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one small run of each scenario")
    parser.add_argument(
        "--scenario", type=int, action="append", choices=(*ALL, CLUSTER), metavar="N"
    )
    parser.add_argument(
        "--output", type=Path, help="default: RESULTS.md, or RESULTS-cluster.md for 7 alone"
    )
    return parser.parse_args(argv)


async def run_sections(
    plan: scenarios.Plan,
    chosen: set[int],
    cluster_plan: cluster_scenario.ClusterPlan | None = None,
) -> list[str]:
    """Run the chosen scenarios in order; return their Markdown sections.

    A scenario that fails becomes a section saying so, so that one broken
    scenario does not throw away the figures of the others.
    """
    sections: list[str] = []
    fanout: Any = None
    if chosen & {1, 3}:
        fanout = await _attempt(1, sections, lambda: scenarios.run_scenario_fanout(plan))
        if fanout is not None:
            sections.append(scenarios.render_fanout(plan, fanout))
    steps: dict[int, Callable[[], Awaitable[str]]] = {
        2: lambda: _idle(plan),
        3: lambda: _slow(plan, fanout),
        4: lambda: _rooms(plan),
        5: lambda: _history(plan),
        6: lambda: run_dashboard(plan),
        CLUSTER: lambda: _cluster(cluster_plan or cluster_scenario.full_plan()),
    }
    for number, step in steps.items():
        if number in chosen and not (number == 3 and fanout is None):
            section = await _attempt(number, sections, step)
            if section is not None:
                sections.append(section)
    return sections


async def _attempt(number: int, sections: list[str], step: Callable[[], Awaitable[T]]) -> T | None:
    try:
        return await step()
    except Exception as exc:
        scenarios.progress(f"scenario {number} failed: {exc!r}")
        sections.append(f"## {number}. Failed\n\nThis run failed: `{exc!r}` (see the log).")
        return None


async def _idle(plan: scenarios.Plan) -> str:
    return scenarios.render_idle(plan, await scenarios.run_scenario_idle(plan))


async def _slow(plan: scenarios.Plan, fanout: Any) -> str:
    return scenarios.render_slow(plan, await scenarios.run_scenario_slow(plan), fanout)


async def _rooms(plan: scenarios.Plan) -> str:
    return scenarios.render_rooms(plan, await scenarios.run_scenario_rooms(plan))


async def _history(plan: scenarios.Plan) -> str:
    return scenarios.render_history(plan, await scenarios.run_scenario_history(plan))


async def _cluster(plan: cluster_scenario.ClusterPlan) -> str:
    return cluster_scenario.render_cluster(plan, await cluster_scenario.run_scenario_cluster(plan))


async def run_dashboard(plan: scenarios.Plan) -> str:
    """Scenario 6: the admin dashboard with the density scenario's connection count."""
    argv = ["--connections", str(plan.idle.clients)]
    args = dashboard_bench.parse_args(argv)
    results = await dashboard_bench.run(args)
    command = "python -m benchmarks.dashboard_bench " + " ".join(argv)
    return dashboard_bench.markdown(results, command)


def document(
    sections: list[str], quick: bool, argv: list[str], minutes: float, *, copies: bool = True
) -> str:
    """The whole RESULTS.md (with ``copies``: and the separate runs' sections)."""
    mode = "quick mode: one small run each, not for quoting" if quick else "full mode"
    head = [
        "# Benchmark results",
        "Written by `python -m benchmarks.run` (`make bench`); do not edit by hand. "
        f"Command: `python -m benchmarks.run {' '.join(argv)}`".rstrip()
        + f" ({mode}, {minutes:.1f} minutes).",
        "Every server runs as a subprocess on 127.0.0.1 and a fresh port (`{port}` in "
        "the commands below; `{tmp}` is a directory made for that run alone). The load "
        "generator (picows on uvloop, receivers in worker processes) shares the same "
        "machine, so client and server compete for its cores.",
        report.machine_table(),
    ]
    return "\n\n".join(head + sections + (separate.sections() if copies else [])) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``make bench``."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    raise_open_files_limit()
    plan = scenarios.quick_plan() if args.quick else scenarios.full_plan()
    cluster_plan = cluster_scenario.quick_plan() if args.quick else cluster_scenario.full_plan()
    chosen = set(args.scenario or ALL)
    output = args.output or (CLUSTER_OUTPUT if chosen == {CLUSTER} else DEFAULT_OUTPUT)
    started = datetime.datetime.now(datetime.UTC)
    sections = uvloop.run(run_sections(plan, chosen, cluster_plan))
    minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
    # A separate file (RESULTS-cluster.md) holds its own run only; RESULTS.md
    # gets a copy of it as a section.
    whole = output == DEFAULT_OUTPUT
    output.write_text(document(sections, args.quick, argv, minutes, copies=whole))
    if not whole:
        separate.refresh_results()
    scenarios.progress(f"wrote {output}")


if __name__ == "__main__":
    main()

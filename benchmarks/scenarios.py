"""The five benchmark scenarios: what each runs and how its table reads.

Every figure is the median of ``Plan.reps`` runs, each against a freshly
started server; runs of different targets are interleaved so that a noisy
minute on the shared machine does not land on one target only.
"""

import asyncio
import dataclasses
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from benchmarks import report
from benchmarks.loadgen import (
    FanoutConfig,
    FanoutResult,
    IdleConfig,
    IdleResult,
    LoadFailed,
    RoomsConfig,
    RoomsResult,
    run_fanout,
    run_idle,
    run_rooms,
)
from benchmarks.pool import WorkerFailed
from benchmarks.server import ServerFailed
from benchmarks.targets import BROADCAST, PEERS, SEED, Target, ours

Result = TypeVar("Result")
RUN_TIMEOUT = 300.0
SLOW_OUTBOUND_BYTES = 65536
# Our server aborts a closed slow consumer after --shutdown-timeout seconds,
# which discards its unread close frame; 60 s keeps it for the count after the run.
SLOW_CLOSE_GRACE = 60


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one benchmark session."""

    reps: int
    fanout: FanoutConfig
    slow: FanoutConfig
    idle: IdleConfig
    rooms: RoomsConfig
    history: FanoutConfig


def full_plan() -> Plan:
    """The sizes the project's targets are stated for (about 20 minutes)."""
    fanout = FanoutConfig(clients=1000, window=64, duration=15.0, workers=2)
    return Plan(
        reps=3,
        fanout=fanout,
        # 20 s for each resumed stalled client to read its backlog through a
        # 4 KiB window up to the close frame: with 5 s, 1 in 30 did not get
        # there in time, though the server had closed it (all 40 of 40 with 20 s).
        slow=dataclasses.replace(
            fanout, slow_fraction=0.01, duration=20.0, slow_close_timeout=20.0
        ),
        idle=IdleConfig(clients=10_000, idle=10.0),
        rooms=RoomsConfig(clients=2000, rooms=200, duration=15.0, workers=2),
        history=dataclasses.replace(fanout, duration=10.0),
    )


def quick_plan() -> Plan:
    """One small run of everything, to check the machinery (about 3 minutes)."""
    fanout = FanoutConfig(clients=200, window=32, duration=3.0, workers=2, drain_timeout=5.0)
    return Plan(
        reps=1,
        fanout=fanout,
        slow=dataclasses.replace(fanout, slow_fraction=0.02, duration=5.0),
        idle=IdleConfig(clients=2000, idle=3.0),
        rooms=RoomsConfig(clients=400, rooms=40, duration=4.0, workers=2),
        history=fanout,
    )


@dataclass
class Runs(Generic[Result]):
    """The results of one scenario, per target name, and the runs that failed."""

    results: dict[str, list[Result]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def of(self, name: str) -> list[Result]:
        """Successful runs of target ``name``."""
        return self.results.get(name, [])


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(message, file=sys.stderr, flush=True)


async def measure(
    plan: Plan,
    targets: Sequence[Target],
    load: Callable[[Target], Awaitable[Result]],
    label: str,
) -> Runs[Result]:
    """Run ``load`` on every target ``plan.reps`` times, interleaved."""
    runs: Runs[Result] = Runs()
    for rep in range(1, plan.reps + 1):
        for target in targets:
            progress(f"[{label}] run {rep}/{plan.reps}: {target.label}")
            try:
                async with asyncio.timeout(RUN_TIMEOUT):
                    result = await load(target)
            except (LoadFailed, ServerFailed, WorkerFailed, TimeoutError, OSError) as exc:
                runs.failures.append(f"{target.label}, run {rep}: {type(exc).__name__}: {exc}")
                progress(f"  failed: {exc!r}")
                continue
            runs.results.setdefault(target.name, []).append(result)
    return runs


def failures(runs: Runs[Result]) -> str:
    """A note listing failed runs, if any."""
    if not runs.failures:
        return ""
    return "\n\nFailed runs (left out of the medians):\n" + "\n".join(
        f"- {f}" for f in runs.failures
    )


def commands(targets: Sequence[Target], scenario: int, config: object) -> str:
    """The exact commands behind a table."""
    lines = [f"- `python -m benchmarks.run --scenario {scenario}`, load: `{config}`"]
    lines += [f"- {t.label}: `{t.command.shown()}`" for t in targets]
    return "\n".join(lines)


# -- scenario 1: fan-out ----------------------------------------------------


def fanout_targets() -> list[Target]:
    """Ours and every peer."""
    return [ours(), *PEERS]


async def run_scenario_fanout(plan: Plan) -> Runs[FanoutResult]:
    """Scenario 1: the same fan-out load against each target."""
    return await measure(plan, fanout_targets(), lambda t: run_fanout(t, plan.fanout), "1")


def server_us_per_delivery(r: FanoutResult) -> float:
    """Server CPU microseconds per delivery."""
    return r.server_cpu_s / r.deliveries * 1e6 if r.deliveries else 0.0


def fanout_row(target: Target, runs: list[FanoutResult], base: list[FanoutResult]) -> list[str]:
    """One target's medians, and how ours compares to it."""
    rates = [r.deliveries_per_s for r in runs]
    cpu = report.median(runs, server_us_per_delivery)
    return [
        target.label,
        report.rate(report.median(runs, lambda r: r.deliveries_per_s)),
        report.listing(rates, report.rate),
        report.micros(report.median(runs, lambda r: r.latency.p50_us)),
        report.micros(report.median(runs, lambda r: r.latency.p99_us)),
        report.micros(report.median(runs, lambda r: r.latency.max_us)),
        str(sum(r.lost for r in runs)),
        str(sum(r.reordered for r in runs)),
        f"{cpu:.2f}",
        report.percent(report.median(runs, lambda r: r.server_cpu_s / r.elapsed_s)),
        report.percent(report.median(runs, lambda r: r.client_cpu_s / r.elapsed_s)),
        report.rate(report.median(runs, lambda r: r.connect_per_s)),
        report.ratio(report.median(base, lambda r: r.deliveries_per_s), median_rate(runs)),
        report.ratio(cpu, report.median(base, server_us_per_delivery)),
    ]


def median_rate(runs: list[FanoutResult]) -> float:
    """Median deliveries per second."""
    return report.median(runs, lambda r: r.deliveries_per_s)


FANOUT_HEADERS = (
    "target",
    "deliveries/s",
    "runs",
    "p50",
    "p99",
    "max",
    "lost",
    "reordered",
    "server CPU µs/delivery",
    "server CPU",
    "client CPU",
    "connects/s",
    "ours ÷ this, deliveries/s",
    "this ÷ ours, CPU/delivery",
)


def fanout_verdict(runs: Runs[FanoutResult]) -> str:
    """The scenario's targets, met or not."""
    base = runs.of("ours")
    if not base:
        return "Our server has no successful run: targets not evaluated."
    speed = median_rate(base)
    # A peer with no successful run gives 0x (MISSED), not a ratio to ourselves.
    broadcast, seed = runs.of(BROADCAST.name), runs.of(SEED.name)
    over_broadcast = speed / median_rate(broadcast) if broadcast else 0.0
    over_seed = speed / median_rate(seed) if seed else 0.0
    lossless = all(r.lost == 0 and r.drained for r in base)
    ordered = all(r.reordered == 0 for r in base)
    server = report.median(base, lambda r: r.server_cpu_s / r.elapsed_s)
    client = report.median(base, lambda r: r.client_cpu_s / r.elapsed_s)
    lines = [
        f"- ours >= 3x websockets.broadcast(): {met(over_broadcast >= 3)} ({over_broadcast:.1f}x)",
        f"- ours >= 5x seed: {met(over_seed >= 5)} ({over_seed:.1f}x)",
        f"- zero loss: {met(lossless)}; order kept: {met(ordered)}",
        f"- bottleneck for ours: the server was busy {report.percent(server)} of a core, "
        f"the load generator's receivers {report.percent(client)}"
        + (
            ": the server is not the limit, so our deliveries/s is a floor set by the "
            "load generator sharing the 2 cores, and server CPU per delivery is the "
            "fairer comparison."
            if server < 0.6
            else "."
        ),
    ]
    return "\n".join(lines)


def met(ok: bool) -> str:
    """MET or MISSED."""
    return "MET" if ok else "MISSED"


def render_fanout(plan: Plan, runs: Runs[FanoutResult]) -> str:
    """Scenario 1 section."""
    base = runs.of("ours")
    rows = [fanout_row(t, runs.of(t.name), base) for t in fanout_targets() if runs.of(t.name)]
    c = plan.fanout
    return "\n\n".join(
        [
            "## 1. Fan-out: one room",
            f"{c.clients} clients in one room ({c.senders} sender, {c.clients - c.senders} "
            f"receivers), {c.size}-byte messages, closed loop of at most {c.window} messages "
            f"not yet delivered to every receiver, {c.duration:.0f} s per run, median of "
            f"{plan.reps} runs. Latency is send to receive, from the timestamp inside each "
            "message. CPU columns are shares of one core over the run (client: the "
            f"{c.workers} receiver processes together).",
            report.table(FANOUT_HEADERS, rows),
            fanout_verdict(runs),
            commands(fanout_targets(), 1, c),
        ]
    ) + failures(runs)


# -- scenario 2: density ----------------------------------------------------


async def run_scenario_idle(plan: Plan) -> Runs[IdleResult]:
    """Scenario 2: many idle connections to our server, heartbeat every second."""
    return await measure(plan, [ours(heartbeat=1)], lambda t: run_idle(t, plan.idle), "2")


def render_idle(plan: Plan, runs: Runs[IdleResult]) -> str:
    """Scenario 2 section."""
    results = runs.of("ours")
    metrics: list[report.Metric[IdleResult]] = [
        ("connections held", lambda r: r.clients, report.rate),
        ("connect rate (/s)", lambda r: r.connect_per_s, report.rate),
        ("server CPU per connect", lambda r: r.connect_server_cpu_ms, lambda v: f"{v:.2f} ms"),
        ("server RSS before", lambda r: r.rss_before, report.mebibytes),
        ("server RSS after", lambda r: r.rss_after, report.mebibytes),
        ("RSS per connection", lambda r: r.rss_per_connection, report.kibibytes),
        ("idle CPU, heartbeat 1 s", lambda r: r.idle_cpu_percent / 100, report.percent),
        ("dropped while idle", lambda r: r.disconnected_while_idle, lambda v: f"{v:.0f}"),
    ]
    rows = report.metric_rows(results, metrics)
    c = plan.idle
    return "\n\n".join(
        [
            "## 2. Density: idle connections",
            f"{c.clients:,} idle connections to our server, {c.room_size} to a room (one "
            "room for all would make the join lines alone N²/2 frames), source addresses "
            f"spread over 127.0.0.2-{1 + c.sources}. Idle CPU is measured over "
            f"{c.idle:.0f} s with `--heartbeat 1`, so the heartbeat sweep (and each "
            f"client's pong) runs {c.idle:.0f} times. RSS per connection = (after - "
            "before) / connections, after the join lines settled.",
            report.table(("metric", "median", "runs"), rows),
            commands([ours(heartbeat=1)], 2, c),
        ]
    ) + failures(runs)


# -- scenario 3: slow consumers ---------------------------------------------


def slow_targets() -> list[Target]:
    """Ours with a small outbound limit, so slow clients trip it within the run."""
    extra = (
        *("--outbound-buffer-bytes", str(SLOW_OUTBOUND_BYTES)),
        *("--shutdown-timeout", str(SLOW_CLOSE_GRACE)),
    )
    return [ours(extra=extra), *PEERS]


async def run_scenario_slow(plan: Plan) -> Runs[FanoutResult]:
    """Scenario 3: scenario 1 with 1 % of the receivers never reading."""
    return await measure(plan, slow_targets(), lambda t: run_fanout(t, plan.slow), "3")


SLOW_HEADERS = (
    "target",
    "healthy deliveries/s",
    "healthy p99",
    "p99, no slow clients (sc. 1)",
    "p99 ratio",
    "server peak RSS",
    "peak RSS, no slow clients",
    "slow clients",
    "closed 4000",
    "closed otherwise",
    "still open",
    "lost",
    "reordered",
)


def slow_row(target: Target, runs: list[FanoutResult], base: list[FanoutResult]) -> list[str]:
    """One target with slow clients next to the same target without."""
    p99 = report.median(runs, lambda r: r.latency.p99_us)
    base_p99 = report.median(base, lambda r: r.latency.p99_us)
    codes: Counter[str] = Counter()
    for r in runs:
        codes.update(r.slow_close_codes)
    return [
        target.label,
        report.rate(median_rate(runs)),
        report.micros(p99),
        report.micros(base_p99) if base else "-",
        report.ratio(p99, base_p99),
        report.mebibytes(report.median(runs, lambda r: r.server_peak_rss)),
        report.mebibytes(report.median(base, lambda r: r.server_peak_rss)) if base else "-",
        str(sum(r.slow for r in runs)),
        str(codes.pop("4000", 0)),
        ", ".join(f"{n} x {code}" for code, n in codes.items()) or "0",
        str(sum(r.slow_still_open for r in runs)),
        str(sum(r.lost for r in runs)),
        str(sum(r.reordered for r in runs)),
    ]


def render_slow(plan: Plan, runs: Runs[FanoutResult], base: Runs[FanoutResult]) -> str:
    """Scenario 3 section."""
    rows = [
        slow_row(t, runs.of(t.name), base.of(t.name)) for t in slow_targets() if runs.of(t.name)
    ]
    ours_runs, ours_base = runs.of("ours"), base.of("ours")
    p99_ratio = (  # without runs of both there is nothing to compare: MISSED
        report.median(ours_runs, lambda r: r.latency.p99_us)
        / max(1.0, report.median(ours_base, lambda r: r.latency.p99_us))
        if ours_runs and ours_base
        else float("inf")
    )
    slow_total = sum(r.slow for r in ours_runs)
    closed = sum(r.slow_close_codes.get("4000", 0) for r in ours_runs)
    c = plan.slow
    return "\n\n".join(
        [
            "## 3. Slow consumers",
            f"Scenario 1 with {c.slow_fraction:.0%} of the receivers stalling from the "
            "first byte (reading paused, 4 KiB receive buffer, 536-byte MSS: on loopback "
            "the 64 KiB MSS would let the kernel buffer megabytes per socket before any "
            f"server limit applies), {c.duration:.0f} s per run. Ours runs with "
            f"`--outbound-buffer-bytes {SLOW_OUTBOUND_BYTES}` and `--shutdown-timeout "
            f"{SLOW_CLOSE_GRACE}` (how long it waits for a close to be read before it "
            "aborts the socket and the close frame with it). After the run the slow "
            "clients read again and their close code is counted; healthy figures only. "
            f"Lost counts messages still undelivered {c.drain_timeout:.0f} s after the last "
            "send: for a stalled server that is backlog, not necessarily a drop.",
            report.table(SLOW_HEADERS, rows),
            f"- ours: healthy p99 within 1.5x of scenario 1: {met(p99_ratio <= 1.5)} "
            f"({p99_ratio:.2f}x)\n- ours: slow clients closed with 4000: "
            f"{met(slow_total > 0 and closed == slow_total)} ({closed} of {slow_total})",
            commands(slow_targets(), 3, c),
        ]
    ) + failures(runs)


# -- scenario 4: many rooms -------------------------------------------------


async def run_scenario_rooms(plan: Plan) -> Runs[RoomsResult]:
    """Scenario 4: many small rooms, every client posting once a second."""
    return await measure(plan, [ours()], lambda t: run_rooms(t, plan.rooms), "4")


def render_rooms(plan: Plan, runs: Runs[RoomsResult]) -> str:
    """Scenario 4 section."""
    results = runs.of("ours")
    metrics: list[report.Metric[RoomsResult]] = [
        ("messages posted", lambda r: r.messages, report.rate),
        ("deliveries", lambda r: r.deliveries, report.rate),
        ("deliveries/s", lambda r: r.deliveries_per_s, report.rate),
        ("lost", lambda r: r.lost, lambda v: f"{v:.0f}"),
        ("reordered", lambda r: r.reordered, lambda v: f"{v:.0f}"),
        ("p50", lambda r: r.latency.p50_us, report.micros),
        ("p99", lambda r: r.latency.p99_us, report.micros),
        ("max", lambda r: r.latency.max_us, report.micros),
        (
            "server CPU per delivery",
            lambda r: r.server_cpu_us_per_delivery,
            lambda v: f"{v:.2f} µs",
        ),
        ("server CPU seconds", lambda r: r.server_cpu_s, lambda v: f"{v:.2f} s"),
        ("server peak RSS", lambda r: r.server_peak_rss, report.mebibytes),
    ]
    rows = report.metric_rows(results, metrics)
    c = plan.rooms
    return "\n\n".join(
        [
            "## 4. Many rooms",
            f"{c.clients:,} clients in {c.rooms} rooms (`?room=rNNN`, "
            f"{c.clients // c.rooms} per room), each posting {c.rate:g} message/s for "
            f"{c.duration:.0f} s (open loop); a client's own echo is not counted.",
            report.table(("metric", "median", "runs"), rows),
            commands([ours()], 4, c),
        ]
    ) + failures(runs)


# -- scenario 5: history on -------------------------------------------------


async def run_scenario_history(plan: Plan) -> Runs[FanoutResult]:
    """Scenario 5: scenario 1's load on ours with history storing off and on."""
    targets = [ours(), ours(history=True)]
    return await measure(plan, targets, lambda t: run_fanout(t, plan.history), "5")


def render_history(plan: Plan, runs: Runs[FanoutResult]) -> str:
    """Scenario 5 section."""
    off, on = runs.of("ours"), runs.of("ours-history")
    rows = []
    for label, results in (("history off", off), ("history on (SQLite)", on)):
        rows.append(
            [
                label,
                report.rate(median_rate(results)),
                report.listing([r.deliveries_per_s for r in results], report.rate),
                report.micros(report.median(results, lambda r: r.latency.p99_us)),
                f"{report.median(results, server_us_per_delivery):.2f}",
                str(sum(r.lost for r in results)),
                str(sum(r.reordered for r in results)),
            ]
        )
    headers = (
        "server",
        "deliveries/s",
        "runs",
        "p99",
        "server CPU µs/delivery",
        "lost",
        "reordered",
    )
    c = plan.history
    cpu_ratio = report.ratio(
        report.median(on, server_us_per_delivery), report.median(off, server_us_per_delivery)
    )
    return "\n\n".join(
        [
            "## 5. History storing on vs off",
            f"Scenario 1's load ({c.clients} clients, window {c.window}, {c.duration:.0f} s) "
            "on our server, runs alternating between `--history false` and "
            "`--history true` (a fresh SQLite file per run either way).",
            report.table(headers, rows),
            f"- on ÷ off, deliveries/s: {report.ratio(median_rate(on), median_rate(off))}; "
            f"server CPU per delivery: {cpu_ratio}",
            commands([ours(), ours(history=True)], 5, c),
        ]
    ) + failures(runs)

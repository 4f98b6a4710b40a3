"""Messages between the coordinator and its worker processes.

Coordinator to worker: :class:`Connect`, :class:`StartPhase`,
:class:`SendAtRate`, :class:`StopPhase`, :class:`ResumeSlow`,
:class:`CountFrames`, :class:`Shutdown`. A worker answers each with one
reply, and between them streams :class:`Acks` while a window is tracked.
"""

from dataclasses import dataclass, field

from benchmarks.dialects import Dialect
from benchmarks.histogram import Histogram


@dataclass(frozen=True)
class ClientSpec:
    """One connection a worker opens."""

    index: int
    room: str | None = None
    source: str | None = None
    slow: bool = False
    port: int | None = None  # a node of a cluster; None: the port of the Connect


@dataclass(frozen=True)
class Connect:
    """Open ``clients`` and wait until the server has registered each."""

    host: str
    port: int
    dialect: Dialect
    clients: tuple[ClientSpec, ...]
    concurrency: int
    rate: float
    timeout: float


@dataclass(frozen=True)
class Connected:
    """Reply to :class:`Connect`; times are ``time.monotonic()`` values."""

    opened: int
    ready: int
    errors: tuple[str, ...]
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class StartPhase:
    """Zero the statistics and window counters; choose what to do with frames.

    The warm-up tracks the window without counting statistics; the measured
    phase does both. Slow clients are paused from the moment they connect.
    """

    track_window: bool
    counting: bool = True


@dataclass(frozen=True)
class PhaseStarted:
    """Reply to :class:`StartPhase`: receivers the window waits for here."""

    healthy: int


@dataclass(frozen=True)
class Acks:
    """Messages delivered to every healthy receiver of one worker.

    Each key is ``sender << 32 | seq``.
    """

    keys: tuple[int, ...]


@dataclass(frozen=True)
class SendAtRate:
    """Make every client post ``rate`` messages a second for ``duration`` s."""

    rate: float
    duration: float
    size: int


@dataclass(frozen=True)
class SendDone:
    """Reply to :class:`SendAtRate`: messages posted per client index."""

    sent: dict[int, int]


@dataclass(frozen=True)
class StopPhase:
    """Stop counting and report."""


@dataclass
class WorkerReport:
    """Statistics of one worker over a phase."""

    received: int = 0
    reordered: int = 0
    received_by_client: dict[int, int] = field(default_factory=dict)
    latency_us: Histogram = field(default_factory=Histogram)
    disconnected: int = 0
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class ResumeSlow:
    """Resume reading on the slow clients and collect their close codes."""

    timeout: float


@dataclass(frozen=True)
class SlowReport:
    """Reply to :class:`ResumeSlow`: close code (or ``None``: none seen) counts."""

    codes: dict[int | None, int]
    still_open: int


@dataclass(frozen=True)
class CountFrames:
    """Ask how many frames arrived so far (to tell when traffic settled)."""


@dataclass(frozen=True)
class FrameCount:
    """Reply to :class:`CountFrames`."""

    frames: int


@dataclass(frozen=True)
class Shutdown:
    """Close every connection and exit."""

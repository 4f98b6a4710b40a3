"""Sample the CPU time and resident memory of the server process."""

import asyncio
import contextlib

import psutil

SAMPLE_INTERVAL = 0.05


class ProcessMonitor:
    """CPU seconds and peak RSS of one process, sampled in the background."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.task: asyncio.Task[None] | None = None

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far."""
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def sleeps(self) -> int:
        """Times the process went to sleep waiting for work (voluntary context
        switches, all its threads): a busy process seldom does, and batches more."""
        return int(self.process.num_ctx_switches().voluntary)

    def rss(self) -> int:
        """Resident set size now, in bytes."""
        return int(self.process.memory_info().rss)

    def reset_peak(self) -> None:
        """Forget the peak seen so far."""
        self.peak_rss = self.rss()

    async def sample(self) -> None:
        """Track the peak RSS until cancelled or the process exits."""
        while True:
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except psutil.Error:
                return
            await asyncio.sleep(SAMPLE_INTERVAL)

    def start(self) -> None:
        """Start sampling."""
        self.reset_peak()
        self.task = asyncio.create_task(self.sample())

    async def stop(self) -> None:
        """Stop sampling."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

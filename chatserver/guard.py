"""The receive loop's last line of defence: an exception no handler expected
becomes one rate-limited log line and an ``internal_error`` event, so a frame
that slips past validation cannot end the socket (1006) or flood the log with
tracebacks."""

from __future__ import annotations

import logging
import time
from typing import Final

log = logging.getLogger(__name__)

REPORT_INTERVAL: Final = 10.0  # seconds between log lines about unexpected errors


class CrashReporter:
    """Logs at most one line per REPORT_INTERVAL, counting the ones it held back."""

    __slots__ = ("_last", "_suppressed")

    def __init__(self) -> None:
        self._last = -REPORT_INTERVAL
        self._suppressed = 0

    def report(self, exc: BaseException, where: str) -> None:
        now = time.monotonic()
        if now - self._last < REPORT_INTERVAL:
            self._suppressed += 1
            return
        held, self._suppressed, self._last = self._suppressed, 0, now
        # One line, no traceback: the type and message locate the bug, and a
        # peer that can trigger it must not be able to grow the log quickly.
        log.error(
            "unexpected %s handling %s: %s (%d similar error(s) not logged in the last %.0f s)",
            type(exc).__name__,
            where,
            str(exc)[:200],
            held,
            REPORT_INTERVAL,
        )


CRASHES: Final = CrashReporter()

"""Whether the store and the broker work, for ``/healthz``, the dashboard and the log.

A backend that fails is marked down with a reason; the log says so once per
outage (not once per failed write) and, when it comes back, how many
operations failed meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[[], None]


@dataclasses.dataclass(slots=True)
class Outage:
    since: float
    reason: str
    failures: int = 0


class Health:
    """Up/down state of each named backend component (``store``, ``broker``)."""

    def __init__(self) -> None:
        self.outages: dict[str, Outage] = {}
        self.listeners: list[Listener] = []

    def down(self, component: str, reason: str) -> None:
        """Record a failure of ``component``; the first one of an outage is logged."""
        outage = self.outages.get(component)
        if outage is None:
            outage = self.outages[component] = Outage(time.time(), reason)
            log.error("%s unavailable: %s", component, reason)
            self._notify()
        outage.failures += 1

    def up(self, component: str) -> None:
        """``component`` works again (a no-op when it was not down)."""
        outage = self.outages.pop(component, None)
        if outage is not None:
            log.warning(
                "%s available again after %.1f s (%d failed operations)",
                component,
                time.time() - outage.since,
                outage.failures,
            )
            self._notify()

    @property
    def ok(self) -> bool:
        return not self.outages

    def problems(self) -> dict[str, str]:
        """Each component that is down, with its reason."""
        return {name: outage.reason for name, outage in self.outages.items()}

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                log.exception("health listener failed")

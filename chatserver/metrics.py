"""Prometheus metrics of one node, in the text format (``prometheus-client``).

Nothing is counted on the hot path for this: a scrape reads the counters the
hub keeps anyway (through a callable the app passes in: the dashboard's query
seam, ``dashboard.rows.metric_counts``),
probes the room log with one read (SQLite on its thread, or Redis), and renders. Every
sample carries a ``node`` label (hostname:port), so a cluster's nodes can be
summed or told apart in one Prometheus. The only state kept here is what a
counter needs to stay monotonic: the bytes sent to connections that have
gone (live ones are summed at scrape time).

A registry per app, not prometheus-client's global one: tests and
benchmarks run several apps in one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .connection import Connection
from .health import Health
from .hub import ConnectionChange
from .roomlog import RoomLog

Counts = Mapping[str, Any]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ChatCollector(Collector):
    """Reads the node's state when Prometheus scrapes."""

    def __init__(
        self,
        read_counts: Callable[[], Counts],
        room_log: RoomLog,
        health: Health,
        broker_kind: str,
    ) -> None:
        self.read_counts = read_counts
        self.room_log = room_log
        self.health = health
        self.node = ""
        self.gone_bytes_out = 0
        self.store_up = 0.0
        self.store_latency = 0.0
        self.broker_kind = broker_kind

    def on_change(self, change: ConnectionChange, conn: Connection) -> None:
        """A hub listener: keep the bytes of connections that leave."""
        if change == "disconnect":
            self.gone_bytes_out += conn.bytes_out

    async def probe(self) -> None:
        """Time one read of the room log (its queue and its backend together)."""
        started = time.perf_counter()
        try:
            await self.room_log.first_id("lobby")
        except Exception:  # a failed probe is what the metric reports, not a 500
            log.warning("metrics: store probe failed", exc_info=True)
            self.store_up = 0.0
        else:
            # A read can work while writes fail (a full disk): health knows.
            self.store_up = 0.0 if "store" in self.health.outages else 1.0
        self.store_latency = time.perf_counter() - started

    def collect(self) -> Iterator[Metric]:
        counts = self.read_counts()
        yield from self._gauges(counts)
        yield from self._counters(counts)

    def _gauges(self, counts: Counts) -> Iterator[Metric]:
        node = [self.node]
        for name, doc, value in (
            ("chat_connections", "Open chat WebSocket connections.", counts["connections"]),
            ("chat_users", "Distinct connected users.", counts["users"]),
            ("chat_rooms", "Rooms with at least one member.", counts["rooms"]),
            ("chat_outbound_buffer_bytes", "Bytes queued to clients.", counts["buffered"]),
            ("chat_store_up", "1 if the last store probe succeeded.", self.store_up),
            ("chat_store_latency_seconds", "Round trip of one read.", self.store_latency),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["node"])
            gauge.add_metric(node, float(value))
            yield gauge
        broker = GaugeMetricFamily(
            "chat_broker_up", "1 if the broker carries events.", labels=["node", "kind"]
        )
        up = 0.0 if "broker" in self.health.outages else 1.0
        broker.add_metric([self.node, self.broker_kind], up)
        yield broker

    def _counters(self, counts: Counts) -> Iterator[Metric]:
        node = [self.node]
        for name, doc, value in (
            ("chat_messages_in", "Chat messages accepted.", counts["messages_in"]),
            ("chat_deliveries", "Events delivered to connections.", counts["deliveries"]),
            (
                "chat_bytes_out",
                "Bytes written to chat connections.",
                counts["bytes_out"] + self.gone_bytes_out,
            ),
        ):
            counter = CounterMetricFamily(name, doc, labels=["node"])
            counter.add_metric(node, float(value))
            yield counter
        closes = CounterMetricFamily(
            "chat_closes", "Chat connections closed, by close code.", labels=["node", "code"]
        )
        for code, number in sorted(counts["close_codes"].items()):
            closes.add_metric([self.node, str(code)], float(number))
        yield closes
        slow = CounterMetricFamily(
            "chat_slow_consumer_closes", "Connections closed 4000 (slow consumer).", labels=["node"]
        )
        slow.add_metric(node, float(counts["close_codes"].get(4000, 0)))
        yield slow


def new_registry(collector: ChatCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

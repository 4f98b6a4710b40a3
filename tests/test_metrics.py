"""``GET /metrics``: Prometheus text from a real server with real clients."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from chatserver.app import create_app
from tests.conftest import ADMIN_AUTH, TIMEOUT, Client, join, make_settings
from tests.test_roles import VIEWER_TOKEN, operator_specs

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: Client, headers: dict[str, str] | None = None) -> Samples:
    async with client.get("/metrics", headers=headers or ADMIN_AUTH) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "node"))
            samples[(sample.name, labels)] = sample.value
    return samples


async def until_sample(client: Client, name: str, labels: dict[str, str], value: float) -> None:
    """Scrape until ``name{labels}`` reads ``value`` (a close is counted as its handler ends)."""
    deadline = time.monotonic() + TIMEOUT
    key = (name, tuple(sorted(labels.items())))
    while (seen := (await scrape(client)).get(key)) != value:
        assert time.monotonic() < deadline, f"{name}{labels} is {seen}, not {value}"
        await asyncio.sleep(0.05)


async def test_metrics_report_connections_traffic_closes_and_the_store(client: Client) -> None:
    """Connections, users, rooms, messages, deliveries, bytes, closes by code, store status."""
    alice = await join(client, "alice")
    bob = await join(client, "bob")
    await alice.send_json(type="message", text="hello")
    assert (await bob.until_type("message"))["text"] == "hello"
    samples = await scrape(client)
    assert samples[("chat_connections", ())] == 2
    assert samples[("chat_users", ())] == 2
    assert samples[("chat_rooms", ())] == 1
    assert samples[("chat_messages_in_total", ())] == 1
    assert samples[("chat_deliveries_total", ())] >= 2
    assert samples[("chat_bytes_out_total", ())] > 0
    assert samples[("chat_store_up", ())] == 1
    assert samples[("chat_broker_up", (("kind", "memory"),))] == 1
    bytes_before = samples[("chat_bytes_out_total", ())]
    async with client.post(
        "/admin/api/kick", json={"name": "bob", "reason": "x"}, headers=ADMIN_AUTH
    ) as response:
        assert response.status == 200
    assert (await bob.closed())[0] == 4500
    await until_sample(client, "chat_closes_total", {"code": "4500"}, 1)
    samples = await scrape(client)
    assert samples[("chat_connections", ())] == 1
    assert samples[("chat_bytes_out_total", ())] >= bytes_before  # a counter never drops
    assert samples[("chat_slow_consumer_closes_total", ())] == 0
    await alice.close()
    await until_sample(client, "chat_closes_total", {"code": "1000"}, 1)


async def test_metrics_need_an_operator_token_or_a_trusted_address(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """No token: 401; a viewer's token: 200; from --metrics-addresses: 200 without one."""
    settings = make_settings(tmp_path, operators=operator_specs())
    client = await aiohttp_client(create_app(settings))
    async with client.get("/metrics") as response:
        assert response.status == 401
        assert "metrics-addresses" in await response.text()
    await scrape(client, {"Authorization": f"Bearer {VIEWER_TOKEN}"})
    trusted = make_settings(tmp_path / "t", metrics_addresses=("127.0.0.0/8",))
    client = await aiohttp_client(create_app(trusted))
    await scrape(client, {})

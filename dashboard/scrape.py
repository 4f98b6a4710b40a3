"""``GET /metrics``: the node's Prometheus metrics, for an operator or a trusted address.

A scraper either sends an operator's token (``Authorization: Bearer``, any
role: viewers may read) or comes from an address or network listed in
``--metrics-addresses`` (e.g. the Prometheus host), which needs no token.
Everything else gets 401, and failed tokens count against the same
per-address limiter as the API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from chatserver.keys import HUB, SETTINGS
from chatserver.metrics import CONTENT_TYPE, ChatCollector, render
from chatserver.ws import client_address

from .auth import bearer_token
from .keys import LIMITER, METRICS, OPERATORS, REGISTRY
from .rows import request_node

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]


def address_trusted(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
    config = request.config_dict
    settings = config[SETTINGS]
    address = client_address(request, settings)
    networks = trusted_networks(settings.metrics_addresses)
    if not address_trusted(address, networks):
        limiter = config[LIMITER]
        if await limiter.retry_after(address) > 0:
            raise web.HTTPTooManyRequests(text="too many failed attempts; wait\n")
        if config[OPERATORS].authenticate(bearer_token(request)) is None:
            await limiter.hit(address)
            raise web.HTTPUnauthorized(
                text="an operator token or an address in --metrics-addresses is needed\n",
                headers={"WWW-Authenticate": 'Bearer realm="chatserver metrics"'},
            )
    collector: ChatCollector = config[METRICS]
    if not collector.node and request.transport is not None:
        collector.node = request_node_name(request)
    await collector.probe()
    body = render(config[REGISTRY])
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def request_node_name(request: web.Request) -> str:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return request_node(request.config_dict[HUB], sockname)

"""Secrets stay out of logs: the access log masks resume tokens in query strings."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import aiohttp
from yarl import URL

from chatserver.accesslog import redact
from tests.conftest import ADMIN_TOKEN, JSON, TIMEOUT, ServerProcess


def test_redact_masks_secret_query_parameters_only() -> None:
    """session, token and csrf values become ***; other parameters stay readable."""
    line = "GET /ws?name=bob&session=abc123&last=lobby:5&token=t0k&CSRF=x HTTP/1.1"
    assert redact(line) == "GET /ws?name=bob&session=***&last=lobby:5&token=***&CSRF=*** HTTP/1.1"


def test_redact_decodes_parameter_names_and_masks_whole_values() -> None:
    """``%74oken`` is a token to aiohttp, so to the log too; ``;`` inside a
    value does not end the mask, and ``;`` as a separator hides what follows."""
    line = "GET /ws?%74oken=a.b.c&pass%77ord=pw&%53ession=s;t&x=1;key=k&room=x HTTP/1.1"
    assert redact(line) == (
        "GET /ws?%74oken=***&pass%77ord=***&%53ession=***&x=1;key=***&room=x HTTP/1.1"
    )


async def welcome(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with http.ws_connect(url, protocols=JSON) as ws:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        event: dict[str, object] = json.loads(msg.data)
        return event


async def stopped_output(server: ServerProcess) -> str:
    """Stop ``server`` (SIGTERM, exit 0) and return everything it printed."""
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 10) == 0
    assert server.proc is not None
    assert server.proc.stdout is not None
    return "".join(server.output) + server.proc.stdout.read()


async def test_a_resume_leaves_no_token_in_the_log(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """After a connect, a resume with ?session= and API calls, no token is in the output."""
    server = await asyncio.to_thread(server_process, "--log-level", "INFO")
    first = await welcome(http, server.url(name="alice"))
    token = str(first["session"])
    resumed = await welcome(http, server.url(session=token, last="lobby:0"))
    assert resumed["resumed"] is True
    base = f"http://127.0.0.1:{server.port}"
    async with http.get(f"{base}/?session={token}") as page:
        assert page.status == 200
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(f"{base}/admin/api/stats?token={ADMIN_TOKEN}", headers=headers) as api:
        assert api.status == 200
    output = await stopped_output(server)
    assert "session=***" in output  # the access log did log the resume
    assert token not in output
    assert ADMIN_TOKEN not in output


async def test_percent_encoded_secret_names_are_masked_in_the_access_log(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """A resume with ``?%73ession=TOKEN`` (aiohttp reads ``session``) resumes,
    and neither it nor ``?%74oken=`` on a page request leaves its value in the log."""
    server = await asyncio.to_thread(server_process, "--log-level", "INFO")
    first = await welcome(http, server.url(name="alice"))
    token = str(first["session"])
    resume = URL(f"ws://127.0.0.1:{server.port}/ws?%73ession={token}", encoded=True)
    async with http.ws_connect(resume, protocols=JSON) as ws:
        resumed = json.loads((await asyncio.wait_for(ws.receive(), TIMEOUT)).data)
    assert resumed["resumed"] is True
    secret = "eyJhbGciOiJIUzI1NiJ9.site-token-body.signature-part"
    page = URL(f"http://127.0.0.1:{server.port}/?%74oken={secret}&%6Bey={secret}", encoded=True)
    async with http.get(page) as response:
        assert response.status == 200
    output = await stopped_output(server)
    assert "%73ession=***" in output
    assert "%74oken=***" in output
    assert token not in output
    assert secret not in output
    assert "signature-part" not in output

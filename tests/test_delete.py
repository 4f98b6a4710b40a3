"""An operator deletes a message: gone from history, hidden or marked on every client."""

from __future__ import annotations

from typing import Any

from cli_client import Style, render_event
from tests.conftest import ADMIN_AUTH, Client, join
from tests.test_roles import VIEWER_TOKEN
from tests.test_roles import client as client


async def api(
    client: Client, method: str, path: str, body: Any = None, status: int = 200
) -> dict[str, Any]:
    async with client.request(method, "/admin/api/" + path, json=body, headers=ADMIN_AUTH) as r:
        data: dict[str, Any] = await r.json()
        assert r.status == status, data
        return data


async def test_delete_removes_the_message_and_tells_every_kind_of_client(client: Client) -> None:
    """JSON clients get delete {room, id}, text clients a line; history and audit agree."""
    alice = await join(client, "alice")
    reader = await join(client, "reader", json_mode=False)
    await alice.send_json(type="message", text="oops, my password")
    msg_id = (await alice.until_type("message"))["id"]
    await alice.send_json(type="message", text="kept")
    await alice.until_type("message")
    await reader.until("kept")
    answer = await api(client, "DELETE", f"rooms/lobby/messages/{msg_id}")
    assert answer["message"] == f"Deleted message {msg_id} of #lobby."
    assert await alice.until_type("delete") == {"type": "delete", "room": "lobby", "id": msg_id}
    assert await reader.until("removed") == f"*** An operator removed message {msg_id}."
    await alice.send_json(type="history", room="lobby")
    texts = [m["text"] for m in (await alice.until_type("history"))["messages"]]
    assert texts == ["kept"]
    room = await api(client, "GET", "rooms/lobby")
    assert [m["text"] for m in room["messages"]] == ["kept"]
    assert [m["name"] for m in room["members"]] == ["alice", "reader"]
    entry = (await api(client, "GET", "audit"))["entries"][0]
    assert (entry["action"], entry["target"], entry["detail"]) == ("delete", "#lobby", str(msg_id))
    assert entry["actor"] == "admin via api@127.0.0.1"
    await api(client, "DELETE", f"rooms/lobby/messages/{msg_id}", status=404)
    await api(client, "POST", "delete", {"room": "lobby", "id": 999}, status=404)
    headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    async with client.post(
        "/admin/api/delete", json={"room": "lobby", "id": 1}, headers=headers
    ) as r:
        assert r.status == 403
    await alice.close()
    await reader.close()


def test_cli_client_prints_which_message_an_operator_removed() -> None:
    """The terminal client cannot unprint a line, so it says which message went."""
    lines = render_event({"type": "delete", "room": "lobby", "id": 7, "ts": 0}, Style(False))
    assert len(lines) == 1
    assert lines[0].endswith("[#lobby] *** An operator removed message 7.")

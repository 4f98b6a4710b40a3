// A room page: members and the message stream, live over /admin/live.
// Server data reaches the page only through textContent and form values.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = $('meta[name="csrf-token"]').content;
  const role = $('meta[name="operator"]').dataset.role;
  const canAct = role === "moderator" || role === "admin";
  const room = $('meta[name="room"]').content;
  const messageBody = $("#messages tbody");
  const memberBody = $("#members tbody");
  const statusLine = $("#status");
  const liveState = $("#live-state");
  const MAX_MESSAGES = 500; // a tab left open keeps a bounded stream
  let lastId = 0;
  for (const tr of messageBody.rows) lastId = Math.max(lastId, Number(tr.dataset.id));
  let retryDelay = 500;

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function clock(ts) {
    return new Date(ts * 1000).toISOString().slice(11, 19);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function actForm(action, fields, label, cls) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = action;
    form.className = "act";
    for (const [name, value] of Object.entries({ csrf, ...fields })) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = String(value);
      form.appendChild(input);
    }
    const button = document.createElement("button");
    button.type = "submit";
    button.className = cls;
    button.textContent = label;
    form.appendChild(button);
    return form;
  }

  function messageRow(m) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(m.id);
    cell(tr, m.id);
    cell(tr, clock(m.ts));
    cell(tr, m.name, "name");
    cell(tr, m.text, "text");
    const td = cell(tr, "", "row-actions");
    if (canAct) {
      td.append(
        actForm("/admin/action/delete", { room, id: m.id }, "Delete", "delete"),
        actForm("/admin/action/kick", { user_id: m.user_id }, "Kick", "kick"),
        actForm("/admin/action/mute", { user_id: m.user_id, duration: "10m" }, "Mute", "mute"),
        // By user id too: a token user's name is only what their token shows.
        actForm("/admin/action/ban", { user_id: m.user_id, name: m.name, duration: "1h" }, "Ban", "ban"),
      );
    }
    return tr;
  }

  function memberRow(row) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(row.id);
    cell(tr, row.id);
    cell(tr, row.name, "name");
    cell(tr, row.address);
    cell(tr, row.messages_in, "num");
    cell(tr, row.muted ? "muted" : "");
    const td = cell(tr, "", "row-actions");
    if (canAct) {
      td.append(
        actForm("/admin/action/kick", { conn_id: row.id }, "Kick", "kick"),
        actForm("/admin/action/mute", { conn_id: row.id, duration: "10m" }, "Mute", "mute"),
        actForm("/admin/action/ban", { conn_id: row.id, duration: "1h" }, "Ban", "ban"),
      );
    }
    return tr;
  }

  function onMembers(diff) {
    if (diff.reset) memberBody.replaceChildren(...diff.rows.map(memberRow));
    for (const id of diff.remove || []) {
      const tr = memberBody.querySelector(`tr[data-id="${id}"]`);
      if (tr) tr.remove();
    }
    for (const row of diff.add || []) memberBody.appendChild(memberRow(row));
    for (const change of diff.update || []) {
      const tr = memberBody.querySelector(`tr[data-id="${change.id}"]`);
      if (!tr) continue;
      if ("messages_in" in change) tr.cells[3].textContent = String(change.messages_in);
      if ("muted" in change) tr.cells[4].textContent = change.muted ? "muted" : "";
    }
    $("#member-count").textContent = String(memberBody.rows.length);
  }

  function onMessages(messages) {
    for (const m of messages) {
      if (m.id <= lastId) continue;
      lastId = m.id;
      messageBody.appendChild(messageRow(m));
    }
    while (messageBody.rows.length > MAX_MESSAGES) messageBody.firstElementChild.remove();
  }

  function onDeleted(ids) {
    for (const id of ids) {
      const tr = messageBody.querySelector(`tr[data-id="${id}"]`);
      if (tr) tr.remove();
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/admin/live`);
    socket.addEventListener("open", () => {
      retryDelay = 500;
      liveState.textContent = "live";
      liveState.classList.add("on");
      socket.send(JSON.stringify({ type: "room", room, after: lastId }));
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "room") {
        onMembers(message.members || {});
        onMessages(message.messages || []);
        document.body.dataset.live = "1";
      } else if (message.type === "deleted") {
        onDeleted(message.ids);
      } else if (message.type === "error") {
        say(message.message, true);
      }
    });
    socket.addEventListener("close", (event) => {
      liveState.textContent = "not live: reconnecting";
      liveState.classList.remove("on");
      if (event.code === 4401) {
        location.assign("/admin/login");
        return;
      }
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.classList.contains("act")) return;
    event.preventDefault();
    const response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    }).catch((error) => {
      say(`Request failed: ${error}`, true);
      return null;
    });
    if (!response) return;
    const data = await response.json().catch(() => ({}));
    if (response.ok) {
      say(data.message || "Done.", false);
      if (form.action.endsWith("/delete")) onDeleted([data.id]);
    } else {
      say(`Error: ${(data.error && data.error.message) || response.statusText}`, true);
    }
  });

  connect();
})();

// The admin dashboard's live updates. Everything the server sends is data:
// it reaches the page only through textContent and form values, never HTML.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = $('meta[name="csrf-token"]').content;
  const me = $('meta[name="operator"]');
  const myName = me.content;
  const myRole = me.dataset.role;
  const canAct = myRole === "moderator" || myRole === "admin";
  // Mirrors dashboard/roles.py: admins lift any ban, moderators the ones they made.
  const canLift = (actor) => myRole === "admin" || (canAct && actor.split(" via ")[0] === myName && actor.includes(" via "));
  const statusLine = $("#status");
  const liveState = $("#live-state");
  const filterForm = $("#filter");
  const connBody = $("#conns tbody");
  const roomBody = $("#rooms tbody");
  const canvas = $("#chart");

  const CONN_FIELDS = [
    "id", "name", "user_id", "identity", "account", "rooms", "address", "dialect", "connected_at",
    "last_activity", "messages_in", "messages_out", "bytes_out", "buffer_fill", "node", "muted",
  ];
  // The one-click buttons of each row: action, label, duration posted without the dialog.
  const ROW_OPS = [["kick", "Kick", ""], ["mute", "Mute", "10m"], ["ban", "Ban", "1h"]];
  const dialog = $("#act-dialog");
  const dialogForm = $("#dialog-form");
  const bulkForm = $("#bulk-form");
  const pickAll = $("#pick-all");
  let pendingAct = null; // what the open dialog will do on Enter / Confirm
  const ROOM_FIELDS = ["name", "members", "messages", "rate"];
  const NUMERIC = new Set([
    "messages_in", "messages_out", "bytes_out", "buffer_fill", "members", "messages", "rate",
  ]);

  const CHART_SECONDS = 300; // as dashboard/live.py keeps: the chart never holds more
  let socket = null;
  let retryDelay = 500;
  let started = Number($('[data-stat="uptime"]').dataset.started) || Date.now() / 1000;
  let position = { total: 0, page: 1, pages: 1, per_page: 50 };
  let chart = [];
  const connRows = new Map(); // id -> {tr, row}
  const roomRows = new Map();

  // ------------------------------------------------------------------ formatting

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let value = Number(n) || 0;
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function clock(ts) {
    return new Date(ts * 1000).toISOString().slice(11, 19); // UTC, like the rest of the page
  }

  function utc(ts) {
    return `${new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s % 60}s`;
  }

  function formatCell(field, value) {
    if (value === null || value === undefined) return "";
    switch (field) {
      case "rooms": return value.join(", ");
      case "connected_at":
      case "last_activity": return clock(value);
      case "bytes_out":
      case "buffer_fill": return bytes(value);
      case "muted": return value ? "muted" : "";
      default: return String(value);
    }
  }

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  // ------------------------------------------------------------------ tables

  function makeRow(fields, row, key) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(row[key]);
    for (const field of fields) {
      const td = document.createElement("td");
      td.dataset.f = field;
      if (NUMERIC.has(field)) td.classList.add("num");
      if (field === "name") td.classList.add("name");
      if (field === "name" && key === "name") {
        // A room's name links to the connections in it (a plain link without script).
        const link = document.createElement("a");
        link.href = `/admin/?room=${encodeURIComponent(row.name)}`;
        link.className = "room-link";
        link.textContent = row.name;
        td.appendChild(link);
      } else {
        td.textContent = formatCell(field, row[field]);
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function rowForm(op, label, duration, id) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = `/admin/action/${op}`;
    form.className = "row-act";
    form.dataset.op = op;
    form.append(hiddenInput("csrf", csrf), hiddenInput("conn_id", id));
    if (duration) form.append(hiddenInput("duration", duration));
    const button = document.createElement("button");
    button.type = "submit";
    button.className = op;
    button.textContent = label;
    form.appendChild(button);
    return form;
  }

  function makeConnRow(row) {
    const tr = makeRow(CONN_FIELDS, row, "id");
    const pickCell = document.createElement("td");
    tr.prepend(pickCell);
    const td = document.createElement("td");
    td.className = "row-actions";
    tr.appendChild(td);
    markBuffer(tr, row);
    if (!canAct) return tr;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.className = "pick";
    pick.name = "conn_ids";
    pick.value = String(row.id);
    pick.setAttribute("form", "bulk-form");
    pick.setAttribute("aria-label", `select connection ${row.id}`);
    pickCell.appendChild(pick);
    for (const [op, label, duration] of ROW_OPS) td.appendChild(rowForm(op, label, duration, row.id));
    return tr;
  }

  function markBuffer(tr, row) {
    const limit = row.buffer_limit || 0;
    tr.classList.toggle("warn", limit > 0 && row.buffer_fill > limit / 2);
    tr.classList.toggle("muted", Boolean(row.muted));
  }

  // Apply one diff message ({reset, rows} | {add, remove, update}, order) to a table.
  function applyDiff(message, body, rows, fields, key, build) {
    if (message.reset) {
      body.replaceChildren();
      rows.clear();
      for (const row of message.rows) {
        const tr = build(row);
        rows.set(row[key], { tr, row });
        body.appendChild(tr);
      }
    }
    for (const id of message.remove || []) {
      const entry = rows.get(id);
      if (entry) entry.tr.remove();
      rows.delete(id);
    }
    for (const row of message.add || []) {
      const tr = build(row);
      rows.set(row[key], { tr, row });
      body.appendChild(tr);
    }
    for (const change of message.update || []) {
      const entry = rows.get(change[key]);
      if (!entry) continue;
      for (const [field, value] of Object.entries(change)) {
        if (field === key) continue; // the row's key never changes (and a room's cell is a link)
        entry.row[field] = value;
        const cell = fields.includes(field) ? entry.tr.querySelector(`td[data-f="${field}"]`) : null;
        if (cell) cell.textContent = formatCell(field, value);
      }
      if (body === connBody) markBuffer(entry.tr, entry.row);
    }
    if (message.order) {
      for (const id of message.order) {
        const entry = rows.get(id);
        if (entry) body.appendChild(entry.tr); // appendChild moves: this sorts the rows
      }
    }
  }

  function onConns(message) {
    // A refresh of the table must not drop the rows an operator has ticked.
    const ticked = new Set(
      [...connBody.querySelectorAll("input.pick:checked")].map((box) => box.value)
    );
    applyDiff(message, connBody, connRows, CONN_FIELDS, "id", makeConnRow);
    for (const box of connBody.querySelectorAll("input.pick")) {
      if (ticked.has(box.value)) box.checked = true;
    }
    if ("total" in message) {
      position = { total: message.total, page: message.page, pages: message.pages, per_page: message.per_page };
      $("#conn-position").textContent =
        `${position.total} total, page ${position.page} of ${position.pages}`;
      filterForm.elements.page.value = String(position.page);
    }
    if (message.reset && pickAll) pickAll.checked = false;
    document.body.dataset.live = "1";
  }

  function makeRoomRow(row) {
    const tr = makeRow(ROOM_FIELDS, row, "name");
    const td = document.createElement("td");
    const link = document.createElement("a");
    link.href = `/admin/rooms/${encodeURIComponent(row.name)}`;
    link.className = "room-page-link";
    link.textContent = "watch";
    td.appendChild(link);
    tr.appendChild(td);
    return tr;
  }

  function onRooms(message) {
    applyDiff(message, roomBody, roomRows, ROOM_FIELDS, "name", makeRoomRow);
  }

  function hiddenInput(name, value) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = String(value);
    return input;
  }

  function liftForm(action, idName, id, label) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = action;
    form.className = "inline";
    form.append(hiddenInput("csrf", csrf), hiddenInput(idName, id));
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = label;
    form.appendChild(button);
    return form;
  }

  function fillList(selector, items, cells, action, idName, label, mayLift) {
    const body = $(`${selector} tbody`);
    body.replaceChildren();
    for (const item of items) {
      const tr = document.createElement("tr");
      tr.dataset.id = String(item.id);
      for (const value of cells(item)) {
        const td = document.createElement("td");
        td.textContent = value === null || value === undefined ? "" : String(value);
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      if (mayLift(item)) td.appendChild(liftForm(action, idName, item.id, label));
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function onBans(bans) {
    fillList("#bans", bans, (b) => [b.id, b.name, b.address, b.subject, b.until ? utc(b.until) : "until lifted", b.reason, b.actor],
      "/admin/action/unban", "ban_id", "Lift", (b) => canLift(b.actor));
  }

  function onMutes(mutes) {
    fillList("#mutes", mutes, (m) => [m.id, m.user_id, m.name, m.until ? utc(m.until) : "until lifted", m.reason, m.actor],
      "/admin/action/unmute", "mute_id", "Unmute", () => canAct);
  }

  function auditRow(entry) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(entry.id);
    for (const value of [utc(entry.ts), entry.actor, entry.action, entry.target, entry.reason, entry.detail]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    return tr;
  }

  function onAudit(entries, replace) {
    const body = $("#audit tbody");
    if (replace) body.replaceChildren();
    // Entries come newest first; prepend oldest first so the newest ends on top.
    for (const entry of [...entries].reverse()) body.prepend(auditRow(entry));
    while (body.rows.length > 50) body.lastElementChild.remove();
  }

  // ------------------------------------------------------------------ stats and chart

  function onStats(stats) {
    for (const [key, value] of Object.entries(stats)) {
      if (key === "type" || key === "sample" || key === "chart") continue;
      if (key === "started") started = value;
      const cell = $(`[data-stat="${key}"]`);
      if (cell && key !== "uptime") cell.textContent = key === "rss_bytes" ? bytes(value) : String(value);
      if (cell && key === "problems") cell.hidden = !value; // the outage banner
    }
    if (stats.sample) {
      chart.push(stats.sample);
      if (chart.length > CHART_SECONDS) chart.splice(0, chart.length - CHART_SECONDS);
      drawChart();
    }
  }

  function tickUptime() {
    $('[data-stat="uptime"]').textContent = duration(Date.now() / 1000 - started);
  }

  // A round scale top (1, 2, 5 x 10^n) at or above ``value``.
  function niceMax(value) {
    const power = 10 ** Math.floor(Math.log10(Math.max(value, 1)));
    for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function shortNumber(value) {
    if (value >= 1e6) return `${(value / 1e6).toFixed(value >= 1e7 ? 0 : 1)}M`;
    if (value >= 1e3) return `${(value / 1e3).toFixed(value >= 1e4 ? 0 : 1)}k`;
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  // The last CHART_SECONDS of [ts, in/s, out/s] on a UTC time axis, values on the left.
  // ``chart`` is capped, so a tab left open for hours draws the same bounded data.
  function drawChart() {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 160;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const now = chart.length ? chart[chart.length - 1][0] : Date.now() / 1000;
    const span = CHART_SECONDS;
    let peak = 1;
    for (const [, inRate, outRate] of chart) peak = Math.max(peak, inRate, outRate);
    const max = niceMax(peak);
    const left = 44;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const x = (ts) => left + ((ts - (now - span)) / span) * plotW;
    const y = (value) => top + plotH - (value / max) * plotH;
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#656d76";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const steps = String(max).startsWith("2") ? 4 : 5; // round values on every line
    for (let i = 0; i <= steps; i += 1) {
      const value = (max * i) / steps;
      ctx.strokeStyle = i === 0 ? "#999" : "#e4e4e4";
      ctx.beginPath();
      ctx.moveTo(left, y(value));
      ctx.lineTo(width - right, y(value));
      ctx.stroke();
      ctx.fillText(`${shortNumber(value)}/s`, left - 4, y(value));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const firstTick = Math.ceil((now - span) / 60) * 60;
    for (let tick = firstTick; tick <= now; tick += 60) {
      ctx.strokeStyle = "#e4e4e4";
      ctx.beginPath();
      ctx.moveTo(x(tick), top);
      ctx.lineTo(x(tick), top + plotH);
      ctx.stroke();
      ctx.fillText(clock(tick).slice(0, 5), x(tick), top + plotH + 4);
    }
    for (const [index, colour] of [[1, "#2563eb"], [2, "#ea580c"]]) {
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      for (const point of chart) {
        if (point[0] < now - span) continue;
        if (!started) ctx.moveTo(x(point[0]), y(point[index]));
        else ctx.lineTo(x(point[0]), y(point[index]));
        started = true;
      }
      ctx.stroke();
    }
    canvas.dataset.points = String(chart.length);
    const last = chart.length ? chart[chart.length - 1] : [now, 0, 0];
    $("#chart-max").textContent =
      `now: ${last[1]} in/s, ${last[2]} deliveries/s; peak ${shortNumber(peak)}/s (UTC time axis)`;
  }

  // ------------------------------------------------------------------ the push channel

  function currentView() {
    const data = new FormData(filterForm);
    const view = { type: "view" };
    for (const [key, value] of data.entries()) view[key] = String(value);
    return view;
  }

  function sendView() {
    const view = currentView();
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(view)) {
      if (key !== "type" && value !== "") params.set(key, value);
    }
    history.replaceState(null, "", `/admin/?${params}`);
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(view));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/admin/live`);
    socket.addEventListener("open", () => {
      retryDelay = 500;
      liveState.textContent = "live";
      liveState.classList.add("on");
      sendView();
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      switch (message.type) {
        case "init":
          onStats(message.stats);
          chart = message.chart.slice(-CHART_SECONDS);
          drawChart();
          onBans(message.bans);
          onMutes(message.mutes);
          onAudit(message.audit, true);
          break;
        case "stats": onStats(message); break;
        case "conns": onConns(message); break;
        case "rooms": onRooms(message); break;
        case "bans": onBans(message.bans); break;
        case "mutes": onMutes(message.mutes); break;
        case "audit": onAudit(message.entries, false); break;
        case "error": say(message.message, true); break;
        default: break;
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

  // ------------------------------------------------------------------ forms

  // POST a form (or a dialog's fields) as the page's script: JSON back, a status line.
  async function post(url, body, form) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      });
    } catch (error) {
      say(`Request failed: ${error}`, true);
      return;
    }
    if (response.status === 401) {
      location.assign("/admin/login");
      return;
    }
    const data = await response.json().catch(() => ({}));
    if (response.ok) {
      say(data.message || "Done.", false);
      if (form) form.reset(); // the next action starts from the defaults, not the last target
    } else {
      say(`Error: ${(data.error && data.error.message) || response.statusText}`, true);
    }
  }

  function submitAction(form, submitter) {
    // A button's formAction is the page's own URL when it has no formaction
    // attribute: only a button that declares one overrides the form's action.
    const url = submitter && submitter.hasAttribute("formaction") ? submitter.formAction : form.action;
    const body = new URLSearchParams(new FormData(form, submitter));
    post(url, body, form.classList.contains("action") ? form : null);
  }

  const VERBS = { kick: "Kick", mute: "Mute", ban: "Ban" };

  // Open the reason/duration dialog for a row's button or for the bulk form.
  function openDialog(act) {
    pendingAct = act;
    $("#dialog-title").textContent = act.title;
    $("#dialog-target").textContent = act.target;
    $("#dialog-reason").value = act.reason || "";
    $("#dialog-duration").value = act.duration || (act.op === "mute" ? "10m" : "1h");
    $("#dialog-by").value = act.by || "name";
    $("#dialog-duration-label").hidden = act.op === "kick";
    $("#dialog-by-label").hidden = act.op !== "ban";
    dialog.showModal();
    $("#dialog-reason").focus();
  }

  function rowAct(form) {
    const op = form.dataset.op;
    const id = Number(form.elements.conn_id.value);
    const entry = connRows.get(id);
    const who = entry ? `${entry.row.name} (connection ${id}, ${entry.row.address})` : `connection ${id}`;
    openDialog({ op, title: `${VERBS[op]} ${entry ? entry.row.name : id}?`, target: who, url: form.action, ids: [id] });
  }

  function bulkAct(submitter) {
    const op = submitter ? submitter.value : "kick";
    const ids = [...document.querySelectorAll('input.pick[form="bulk-form"]:checked')].map((box) => Number(box.value));
    if (!ids.length) {
      say("Select at least one row first.", true);
      return;
    }
    openDialog({
      op,
      title: `${VERBS[op]} ${ids.length} connection(s)?`,
      target: `connections ${ids.join(", ")}`,
      url: "/admin/action/bulk",
      ids,
      bulk: true,
      reason: bulkForm.elements.reason.value,
      duration: bulkForm.elements.duration.value,
      by: bulkForm.elements.by.value,
    });
  }

  function confirmDialog() {
    const act = pendingAct;
    pendingAct = null;
    dialog.close();
    if (!act) return;
    const body = new URLSearchParams();
    body.set("csrf", csrf);
    body.set("reason", $("#dialog-reason").value);
    if (act.op !== "kick") body.set("duration", $("#dialog-duration").value);
    if (act.op === "ban") body.set("by", $("#dialog-by").value);
    if (act.bulk) {
      body.set("op", act.op);
      for (const id of act.ids) body.append("conn_ids", String(id));
    } else {
      body.set("conn_id", String(act.ids[0]));
    }
    post(act.url, body, act.bulk ? bulkForm : null);
  }

  dialogForm.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in a field or Confirm
    confirmDialog();
  });
  $("#dialog-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    pendingAct = null; // Escape or Cancel: nothing happens
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form === filterForm) {
      event.preventDefault();
      clearTimeout(filterTimer); // the typing's delayed view would only repeat this one
      filterForm.elements.page.value = "1";
      sendView();
    } else if (form === dialogForm) {
      return;
    } else if (form.classList.contains("row-act")) {
      event.preventDefault();
      rowAct(form);
    } else if (form === bulkForm) {
      event.preventDefault();
      bulkAct(event.submitter);
    } else if (form.classList.contains("action") || form.classList.contains("inline")) {
      event.preventDefault();
      submitAction(form, event.submitter);
    }
  });

  if (pickAll) pickAll.addEventListener("change", () => {
    for (const box of connBody.querySelectorAll("input.pick")) box.checked = pickAll.checked;
  });

  roomBody.addEventListener("click", (event) => {
    const link = event.target.closest("a.room-link");
    if (!link) return;
    event.preventDefault();
    for (const key of ["q", "name", "address"]) filterForm.elements[key].value = "";
    filterForm.elements.room.value = link.textContent;
    filterForm.elements.page.value = "1";
    sendView();
  });

  let filterTimer = null;
  filterForm.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      filterForm.elements.page.value = "1";
      sendView();
    }, 250);
  });

  function turnPage(step) {
    const page = Math.min(Math.max(1, position.page + step), position.pages);
    filterForm.elements.page.value = String(page);
    sendView();
  }
  // Links that page without script; with it, the push channel turns the page.
  $("#prev-page").addEventListener("click", (event) => {
    event.preventDefault();
    turnPage(-1);
  });
  $("#next-page").addEventListener("click", (event) => {
    event.preventDefault();
    turnPage(1);
  });

  // Rows rendered by the server become live rows once the channel resets the table.
  tickUptime();
  setInterval(tickUptime, 1000);
  window.addEventListener("resize", drawChart);
  drawChart();
  connect();
})();

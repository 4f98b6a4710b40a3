// The admin dashboard's live updates. Everything the server sends is data:
// it reaches the page only through textContent and form values, never HTML.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = $('meta[name="csrf-token"]').content;
  const statusLine = $("#status");
  const liveState = $("#live-state");
  const filterForm = $("#filter");
  const connBody = $("#conns tbody");
  const roomBody = $("#rooms tbody");
  const canvas = $("#chart");

  const CONN_FIELDS = [
    "id", "name", "user_id", "identity", "rooms", "address", "dialect", "connected_at",
    "last_activity", "messages_in", "messages_out", "bytes_out", "buffer_fill", "node",
  ];
  const ROOM_FIELDS = ["name", "members", "messages", "rate"];
  const NUMERIC = new Set([
    "messages_in", "messages_out", "bytes_out", "buffer_fill", "members", "messages", "rate",
  ]);

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
      td.textContent = formatCell(field, row[field]);
      tr.appendChild(td);
    }
    return tr;
  }

  function makeConnRow(row) {
    const tr = makeRow(CONN_FIELDS, row, "id");
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "select";
    button.dataset.conn = String(row.id);
    button.textContent = "Select";
    td.appendChild(button);
    tr.appendChild(td);
    markBuffer(tr, row);
    return tr;
  }

  function markBuffer(tr, row) {
    const limit = row.buffer_limit || 0;
    tr.classList.toggle("warn", limit > 0 && row.buffer_fill > limit / 2);
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
        entry.row[field] = value;
        const index = fields.indexOf(field);
        if (index >= 0) entry.tr.cells[index].textContent = formatCell(field, value);
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
    applyDiff(message, connBody, connRows, CONN_FIELDS, "id", makeConnRow);
    if ("total" in message) {
      position = { total: message.total, page: message.page, pages: message.pages, per_page: message.per_page };
      $("#conn-position").textContent =
        `${position.total} total, page ${position.page} of ${position.pages}`;
      filterForm.elements.page.value = String(position.page);
    }
    document.body.dataset.live = "1";
  }

  function onRooms(message) {
    applyDiff(message, roomBody, roomRows, ROOM_FIELDS, "name", (row) => makeRow(ROOM_FIELDS, row, "name"));
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

  function fillList(selector, items, cells, action, idName, label) {
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
      td.appendChild(liftForm(action, idName, item.id, label));
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function onBans(bans) {
    fillList("#bans", bans, (b) => [b.id, b.name, b.address, b.until ? utc(b.until) : "until lifted", b.reason, b.actor],
      "/admin/action/unban", "ban_id", "Lift");
  }

  function onMutes(mutes) {
    fillList("#mutes", mutes, (m) => [m.id, m.user_id, m.name, m.until ? utc(m.until) : "until lifted", m.reason, m.actor],
      "/admin/action/unmute", "mute_id", "Unmute");
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
    }
    if (stats.sample) {
      chart.push(stats.sample);
      if (chart.length > 300) chart = chart.slice(-300);
      drawChart();
    }
  }

  function tickUptime() {
    $('[data-stat="uptime"]').textContent = duration(Date.now() / 1000 - started);
  }

  function drawChart() {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 160;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const now = chart.length ? chart[chart.length - 1][0] : Date.now() / 1000;
    const span = 300;
    let max = 1;
    for (const [, inRate, outRate] of chart) max = Math.max(max, inRate, outRate);
    const pad = 4;
    const x = (ts) => pad + ((ts - (now - span)) / span) * (width - 2 * pad);
    const y = (value) => height - pad - (value / max) * (height - 2 * pad);
    ctx.strokeStyle = "#ddd";
    ctx.lineWidth = 1;
    for (let i = 1; i < 4; i += 1) {
      ctx.beginPath();
      ctx.moveTo(0, (height * i) / 4);
      ctx.lineTo(width, (height * i) / 4);
      ctx.stroke();
    }
    for (const [index, colour] of [[1, "#2563eb"], [2, "#ea580c"]]) {
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      chart.forEach((point, i) => {
        if (i === 0) ctx.moveTo(x(point[0]), y(point[index]));
        else ctx.lineTo(x(point[0]), y(point[index]));
      });
      ctx.stroke();
    }
    $("#chart-max").textContent = `scale: 0 to ${max.toFixed(0)}/s`;
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
          chart = message.chart;
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

  async function submitAction(form, submitter) {
    const url = submitter && submitter.formAction ? submitter.formAction : form.action;
    const body = new URLSearchParams(new FormData(form, submitter));
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
    if (response.ok) say(data.message || "Done.", false);
    else say(`Error: ${(data.error && data.error.message) || response.statusText}`, true);
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form === filterForm) {
      event.preventDefault();
      filterForm.elements.page.value = "1";
      sendView();
    } else if (form.classList.contains("action") || form.classList.contains("inline")) {
      event.preventDefault();
      submitAction(form, event.submitter);
    }
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
  $("#prev-page").addEventListener("click", () => turnPage(-1));
  $("#next-page").addEventListener("click", () => turnPage(1));

  connBody.addEventListener("click", (event) => {
    const button = event.target.closest("button.select");
    if (!button) return;
    const id = Number(button.dataset.conn);
    const entry = connRows.get(id);
    $("#act-conn").value = String(id);
    $("#act-target").textContent = entry
      ? `${entry.row.name} (${entry.row.address}, user ${entry.row.user_id})`
      : `connection ${id}`;
    for (const tr of connBody.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    button.closest("tr").classList.add("selected");
    $("#act-reason").focus();
  });

  // Rows rendered by the server become live rows once the channel resets the table.
  tickUptime();
  setInterval(tickUptime, 1000);
  window.addEventListener("resize", drawChart);
  drawChart();
  connect();
})();

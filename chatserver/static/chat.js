// The browser chat client on the chat.v1 JSON dialect (see docs/protocol.md).
// Every name and text from the server goes into the page through textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const logs = $("log"); // the scrolling box; one <ol> per room inside
  const state = $("state");
  const text = $("text");
  const marker = $("new-marker");

  const LEAVE_WORDS = {
    quit: "has disconnected.",
    leave: "has left.",
    timeout: "has disconnected (timed out).",
    slow: "has disconnected (too slow).",
    shutdown: "has disconnected (server shutdown).",
  };
  const JOIN_WORDS = { join: "has joined.", connect: "has connected.", resume: "has reconnected." };
  // Close codes in a person's words (docs/protocol.md, "Limits and close codes").
  const CLOSE_WORDS = {
    1000: "Disconnected.",
    1001: "The server is restarting.",
    1006: "The connection dropped.",
    1008: "Disconnected by the server: too many messages.",
    1009: "Disconnected: a message was too big.",
    1011: "The server hit an internal error.",
    1012: "The server is restarting.",
    1013: "The server is overloaded.",
    4000: "This page could not keep up with the chat (slow connection).",
    4001: "This chat was opened in another window or tab.",
    4500: "You were kicked by an operator",
    4501: "You are banned",
  };
  const FINAL_CODES = new Set([1000, 1008, 1009, 4001, 4500, 4501]);
  const MAX_LINES = 2000; // per room

  let socket = null;
  let me = null;
  let session = "";
  const rooms = new Map(); // name -> {log, unread, members: Map(id -> name)}
  let current = null;
  let lastIds = {}; // resume cursors: room -> newest message id seen
  let joining = new Set();
  let wanted = false; // the user wants to be connected
  let outage = false; // a "connection lost" line is shown; say "reconnected" once back
  let retryDelay = 1000;
  let retryTimer = null;

  // ------------------------------------------------------------------ rooms

  function room(name) {
    let entry = rooms.get(name);
    if (!entry) {
      const log = document.createElement("ol");
      log.className = "log";
      log.dataset.room = name;
      log.hidden = name !== current;
      logs.appendChild(log);
      entry = { log, unread: 0, members: new Map() };
      rooms.set(name, entry);
    }
    return entry;
  }

  function forgetRoom(name) {
    const entry = rooms.get(name);
    if (!entry) return;
    entry.log.remove();
    rooms.delete(name);
    delete lastIds[name];
    if (current === name) switchTo([...rooms.keys()].pop() || null);
    renderRooms();
  }

  function switchTo(name) {
    current = name;
    for (const [roomName, entry] of rooms) entry.log.hidden = roomName !== name;
    if (name && rooms.has(name)) rooms.get(name).unread = 0;
    renderRooms();
    renderPeople();
    showState();
    scrollToBottom();
  }

  function renderRooms() {
    const list = $("rooms");
    list.replaceChildren();
    for (const [name, entry] of rooms) {
      const item = document.createElement("li");
      item.dataset.room = name;
      item.classList.toggle("current", name === current);
      const open = document.createElement("button");
      open.type = "button";
      open.className = "room-name";
      open.textContent = `#${name}`;
      open.title = `Switch to #${name}`;
      open.addEventListener("click", () => switchTo(name));
      item.appendChild(open);
      if (entry.unread) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(entry.unread);
        badge.title = `${entry.unread} unread`;
        item.appendChild(badge);
      }
      const leave = document.createElement("button");
      leave.type = "button";
      leave.className = "leave";
      leave.textContent = "\u00d7";
      leave.title = `Leave #${name}`;
      leave.setAttribute("aria-label", `Leave #${name}`);
      leave.addEventListener("click", () => send({ type: "leave", room: name }));
      item.appendChild(leave);
      list.appendChild(item);
    }
  }

  function renderPeople() {
    const list = $("people");
    list.replaceChildren();
    const entry = current ? rooms.get(current) : null;
    const members = entry ? [...entry.members] : [];
    $("people-title").textContent = current ? `Here in #${current} (${members.length})` : "Here";
    members.sort((a, b) => a[1].localeCompare(b[1]));
    for (const [id, name] of members) {
      const item = document.createElement("li");
      item.textContent = name;
      if (me && id === me.id) {
        item.classList.add("me");
        item.textContent = `${name} (you)`;
      }
      list.appendChild(item);
    }
  }

  // ------------------------------------------------------------------ output

  function atBottom() {
    return logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
  }

  function scrollToBottom() {
    logs.scrollTop = logs.scrollHeight;
    marker.hidden = true;
  }

  function clock(ts) {
    const when = typeof ts === "number" ? new Date(ts * 1000) : new Date();
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  }

  // One line in a room's log (the current room's when none is named).
  function line(kind, parts, options = {}) {
    const target = options.room || current;
    const log = target ? room(target).log : logs.querySelector("ol.log:not([hidden])") || room("lobby").log;
    const item = document.createElement("li");
    item.className = kind;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = clock(options.ts);
    if (typeof options.ts === "number") time.title = new Date(options.ts * 1000).toLocaleString();
    item.appendChild(time);
    for (const part of parts) {
      const span = document.createElement("span");
      if (typeof part === "string") span.textContent = part;
      else {
        span.textContent = part.text;
        span.className = part.cls;
      }
      item.appendChild(span);
    }
    const visible = !log.hidden;
    const stick = atBottom();
    log.appendChild(item);
    while (log.children.length > MAX_LINES) log.firstElementChild.remove();
    if (!visible) {
      if (options.unread && target) {
        room(target).unread += 1;
        renderRooms();
      }
    } else if (stick) {
      scrollToBottom();
    } else {
      marker.hidden = false;
    }
    return item;
  }

  function showState(message, isError) {
    if (message === undefined) {
      message = me ? `Connected as ${me.name}${current ? ` in #${current}` : ""}.` : "Not connected.";
    }
    state.textContent = message;
    state.classList.toggle("error", Boolean(isError));
  }

  function messageLine(msg, roomName) {
    const options = { room: roomName, ts: msg.ts, unread: true };
    const item = msg.text.startsWith("/me ")
      ? line("message", [`* ${msg.user.name} ${msg.text.slice(4)}`], options)
      : line("message", [{ text: msg.user.name, cls: "who" }, `: ${msg.text}`], options);
    item.dataset.msg = String(msg.id); // found again by an operator's "delete"
  }

  // ------------------------------------------------------------------ events

  function onWelcome(event) {
    const hadSession = Boolean(session);
    const previous = [...rooms.keys()];
    me = event.user;
    session = event.session;
    retryDelay = 1000;
    if (!event.resumed) lastIds = {};
    for (const name of event.rooms) {
      room(name);
      if (!(name in lastIds)) lastIds[name] = (event.last_ids || {})[name] || 0;
    }
    if (!current || !rooms.has(current) || !event.rooms.includes(current)) {
      current = event.rooms[0] || null;
    }
    for (const name of previous) {
      if (event.rooms.includes(name)) continue;
      if (hadSession && !event.resumed) {
        send({ type: "join", room: name }); // a new session: take my rooms back
        joining.add(name);
      } else forgetRoom(name);
    }
    switchTo(current);
    for (const name of event.rooms) send({ type: "who", room: name }); // who is here now
    if (outage) {
      line("notice", ["*** Reconnected."]);
      outage = false;
    } else if (!hadSession) {
      line("notice", [`Welcome, ${me.name}! You are in ${event.rooms.map((r) => `#${r}`).join(", ")}. Type /help for commands.`]);
    }
  }

  function onMembership(event) {
    const mine = me && event.user.id === me.id;
    if (event.type === "join") {
      const entry = room(event.room);
      entry.members.set(event.user.id, event.user.name);
      if (mine && event.reason === "join") {
        joining.delete(event.room);
        switchTo(event.room);
      }
      line("notice", [`${event.user.name} ${JOIN_WORDS[event.reason] || "has joined."}`], { room: event.room, ts: event.ts });
    } else {
      const entry = rooms.get(event.room);
      if (entry) entry.members.delete(event.user.id);
      const detail = event.detail ? ` (${event.detail})` : "";
      const words = event.reason === "kicked" ? `was kicked${detail}.`
        : event.reason === "banned" ? `was banned${detail}.`
        : LEAVE_WORDS[event.reason] || `has disconnected (${event.reason}).`;
      line("notice", [`${event.user.name} ${words}`], { room: event.room, ts: event.ts });
      if (mine && event.reason === "leave") forgetRoom(event.room);
    }
    if (event.room === current) renderPeople();
  }

  function onWho(event) {
    const entry = room(event.room);
    entry.members = new Map(event.users.map((u) => [u.id, u.name]));
    if (!(event.room in lastIds)) lastIds[event.room] = event.last_id || 0;
    if (joining.delete(event.room)) switchTo(event.room); // large rooms send no join notice
    renderRooms();
    if (event.room === current) renderPeople();
  }

  function onEvent(event) {
    switch (event.type) {
      case "welcome":
        onWelcome(event);
        break;
      case "message":
        if (event.id <= (lastIds[event.room] || 0)) break; // already shown (replay overlap)
        lastIds[event.room] = event.id;
        messageLine(event, event.room);
        break;
      case "delete": { // an operator removed a message: blank it where shown, say so
        const shown = room(event.room).log.querySelector(`li[data-msg="${event.id}"]`);
        if (shown) {
          shown.classList.add("deleted");
          shown.lastElementChild.textContent = ": (removed by an operator)";
        }
        line("system", [`*** An operator removed message ${event.id}.`], { room: event.room });
        break;
      }
      case "join":
      case "leave":
        onMembership(event);
        break;
      case "nick":
        for (const entry of rooms.values()) {
          if (entry.members.has(event.user.id)) entry.members.set(event.user.id, event.user.name);
        }
        if (me && event.user.id === me.id) me = event.user;
        line("notice", [`${event.old} is now known as ${event.user.name}.`], { ts: event.ts });
        renderPeople();
        showState();
        break;
      case "who":
        onWho(event);
        break;
      case "history":
        if (!event.messages.length) break; // nothing said there yet: no empty marker
        for (const msg of event.messages) messageLine(msg, event.room);
        line("notice", [`(end of history for #${event.room})`], { room: event.room });
        break;
      case "resumed": {
        let recovered = 0;
        for (const item of Object.values(event.rooms)) recovered += item.recovered;
        if (recovered) line("notice", [`*** Recovered ${recovered} missed message${recovered === 1 ? "" : "s"}.`]);
        break;
      }
      case "rooms":
        line("notice", [`Your rooms: ${event.rooms.map((r) => `#${r}`).join(", ")}`]);
        break;
      case "system":
        line("system", [`*** ${event.text}`], { room: event.room });
        break;
      case "error":
        if (typeof event.ref === "string" && event.ref.startsWith("join:")) joining.delete(event.ref.slice(5));
        line("error", [`Error: ${event.message}`]);
        break;
      default:
        break; // unknown events are ignored, as the protocol asks
    }
  }

  // ------------------------------------------------------------------ commands

  function send(payload) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(payload));
  }

  function joinRoom(name) {
    const clean = name.trim().replace(/^#/, "");
    if (!clean) return;
    if (rooms.has(clean)) {
      switchTo(clean);
      return;
    }
    joining.add(clean);
    send({ type: "join", room: clean, history: 20, ref: `join:${clean}` });
  }

  function command(input) {
    if (!input.startsWith("/") || input.startsWith("//")) {
      const body = input.startsWith("//") ? input.slice(1) : input;
      return { type: "message", text: body, room: current || undefined };
    }
    const space = input.indexOf(" ");
    const verb = (space < 0 ? input.slice(1) : input.slice(1, space)).toLowerCase();
    const rest = space < 0 ? "" : input.slice(space + 1).trim();
    switch (verb) {
      case "nick": return { type: "nick", name: rest };
      case "join":
        joinRoom(rest);
        return null;
      case "leave": return { type: "leave", room: rest.replace(/^#/, "") || current || "" };
      case "who": return { type: "who", room: rest.replace(/^#/, "") || current || undefined };
      case "history": return { type: "history", room: current || undefined, limit: Number(rest) || 20 };
      case "rooms": return { type: "rooms" };
      case "me": return { type: "message", text: `/me ${rest}`, room: current || undefined };
      case "quit": return { type: "quit" };
      case "help": return { type: "help" };
      default:
        line("error", [`Unknown command /${verb}; type /help`]);
        return null;
    }
  }

  // ------------------------------------------------------------------ the socket

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams();
    if (session) {
      // Resume: the same identity and rooms, and every message missed meanwhile.
      params.set("session", session);
      const cursors = Object.entries(lastIds).map(([name, id]) => `${name}:${id}`);
      if (cursors.length) params.set("last", cursors.join(","));
    } else {
      const name = $("name").value.trim();
      const first = $("room").value.trim();
      if (name) params.set("name", name);
      if (first) params.set("room", first);
      params.set("history", "20");
    }
    return `${scheme}//${location.host}/ws?${params}`;
  }

  function setConnected(connected) {
    text.disabled = !connected;
    $("send").disabled = !connected;
    $("new-room").disabled = !connected;
    $("join-room").disabled = !connected;
    $("connect").disabled = connected || wanted;
    $("disconnect").disabled = !wanted;
    if (connected) text.focus();
  }

  function open() {
    clearTimeout(retryTimer);
    if (!outage) showState("Connecting...");
    socket = new WebSocket(socketUrl(), "chat.v1");
    socket.addEventListener("open", () => setConnected(true));
    socket.addEventListener("message", (message) => {
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        line("error", [`Could not read a server message: ${error}`]);
      }
    });
    socket.addEventListener("close", (event) => onClose(event));
  }

  function onClose(event) {
    setConnected(false);
    socket = null;
    const words = CLOSE_WORDS[event.code] || `Disconnected (code ${event.code}).`;
    if (FINAL_CODES.has(event.code) || !wanted) {
      wanted = false;
      const removed = event.code === 4500 || event.code === 4501;
      const said = removed ? `${words}${event.reason ? `: ${event.reason}` : ""}.` : words;
      showState(said, event.code !== 1000);
      line(event.code === 1000 ? "notice" : "error", [`*** ${said}`]);
      if (removed || event.code === 4001) session = "";
      // Gone for good: nobody is "here" any more; the logs stay readable.
      for (const entry of rooms.values()) entry.members.clear();
      renderPeople();
      setConnected(false);
      return;
    }
    if (!outage) {
      outage = true;
      line("error", [`*** Connection lost: ${words} Reconnecting...`]);
    }
    const delay = retryDelay * (0.5 + Math.random());
    showState(`Connection lost: ${words} Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s...`, true);
    retryTimer = setTimeout(open, delay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  // ------------------------------------------------------------------ wiring

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (socket) return;
    wanted = true;
    outage = false;
    session = "";
    me = null;
    lastIds = {};
    joining = new Set();
    for (const name of [...rooms.keys()]) rooms.get(name).log.remove();
    rooms.clear();
    current = null;
    renderRooms();
    renderPeople();
    setConnected(false);
    open();
  });

  $("disconnect").addEventListener("click", () => {
    wanted = false;
    clearTimeout(retryTimer);
    if (socket) socket.close(1000, "bye");
    else showState("Disconnected.");
    setConnected(false);
  });

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = text.value;
    if (!input.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    const payload = command(input);
    if (payload) send(payload);
    text.value = "";
  });

  $("room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    joinRoom($("new-room").value);
    $("new-room").value = "";
  });

  logs.addEventListener("scroll", () => {
    if (atBottom()) marker.hidden = true;
  });
  marker.addEventListener("click", scrollToBottom);
})();

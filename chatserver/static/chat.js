// A small browser chat client on the chat.v1 JSON dialect (see docs/protocol.md).
// Every name and text from the server goes into the page through textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const state = $("state");
  const text = $("text");

  const LEAVE_LINES = {
    quit: (e) => `${e.user.name} has disconnected.`,
    leave: (e) => `${e.user.name} has left #${e.room}.`,
    kicked: (e) => `${e.user.name} was kicked (${e.detail || ""}).`,
    banned: (e) => `${e.user.name} was banned (${e.detail || ""}).`,
  };
  const NO_RECONNECT = {
    1000: "Disconnected.",
    1008: "Disconnected by the server (policy).",
    1009: "Disconnected: a message was too big.",
    4001: "This session was resumed in another window.",
    4500: "You were kicked",
    4501: "You are banned",
  };

  let socket = null;
  let me = null;
  let session = "";
  let rooms = [];
  let current = null;
  let lastIds = {};
  let wanted = false; // the user wants to be connected
  let retryDelay = 1000;
  let retryTimer = null;

  // ------------------------------------------------------------------ output

  function line(kind, parts, room) {
    const item = document.createElement("li");
    item.className = kind;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = new Date().toLocaleTimeString([], { hour12: false });
    item.appendChild(time);
    if (room && room !== current) {
      const tag = document.createElement("span");
      tag.className = "room";
      tag.textContent = `[#${room}]`;
      item.appendChild(tag);
    }
    for (const part of parts) {
      const span = document.createElement("span");
      if (typeof part === "string") span.textContent = part;
      else {
        span.textContent = part.text;
        span.className = part.cls;
      }
      item.appendChild(span);
    }
    const atBottom = log.parentElement.scrollTop + log.parentElement.clientHeight >= log.parentElement.scrollHeight - 4;
    log.appendChild(item);
    while (log.children.length > 2000) log.firstElementChild.remove();
    if (atBottom) item.scrollIntoView({ block: "end" });
  }

  function setState(message, isError) {
    state.textContent = message;
    state.classList.toggle("error", Boolean(isError));
  }

  function messageLine(msg, room) {
    if (msg.text.startsWith("/me ")) {
      line("message", [`* ${msg.user.name} ${msg.text.slice(4)}`], room);
    } else {
      line("message", [{ text: msg.user.name, cls: "who" }, `: ${msg.text}`], room);
    }
  }

  // ------------------------------------------------------------------ events

  function onEvent(event) {
    switch (event.type) {
      case "welcome":
        me = event.user;
        session = event.session;
        rooms = event.rooms;
        current = event.resumed ? rooms[rooms.length - 1] : rooms[0];
        retryDelay = 1000;
        setState(`Connected as ${me.name} in #${current}.`);
        line("notice", [`Welcome${event.resumed ? " back" : ""}, ${me.name}! You are in ${rooms.map((r) => `#${r}`).join(", ")}. Type /help for commands.`]);
        break;
      case "message":
        lastIds[event.room] = Math.max(lastIds[event.room] || 0, event.id);
        messageLine(event, event.room);
        log.lastElementChild.dataset.msg = `${event.room}:${event.id}`; // for "delete"
        break;
      case "delete": { // an operator removed a message: blank it where shown, say so
        const shown = log.querySelector(`li[data-msg="${CSS.escape(`${event.room}:${event.id}`)}"]`);
        if (shown) { shown.classList.add("deleted"); shown.lastElementChild.textContent = ": (removed by an operator)"; }
        line("system", [`*** An operator removed message ${event.id}.`], event.room);
        break;
      }
      case "join": {
        const verb = event.reason === "join" ? `has joined #${event.room}.`
          : event.reason === "resume" ? "has reconnected." : "has connected.";
        line("notice", [`${event.user.name} ${verb}`], event.room);
        break;
      }
      case "leave": {
        const render = LEAVE_LINES[event.reason];
        const words = render ? render(event) : `${event.user.name} has disconnected (${event.reason}).`;
        line("notice", [words], event.room);
        if (me && event.user.id === me.id) forgetRoom(event.room);
        break;
      }
      case "nick":
        if (me && event.user.id === me.id) {
          me = event.user;
          setState(`Connected as ${me.name} in #${current}.`);
        }
        line("notice", [`${event.old} is now known as ${event.user.name}.`]);
        break;
      case "who":
        line("notice", [`Users in #${event.room} (${event.users.length}): ${event.users.map((u) => u.name).join(", ")}`]);
        break;
      case "history":
        for (const msg of event.messages) {
          lastIds[event.room] = Math.max(lastIds[event.room] || 0, msg.id);
          messageLine(msg, event.room);
        }
        line("notice", [`(end of history for #${event.room})`]);
        break;
      case "resumed": {
        let recovered = 0;
        for (const item of Object.values(event.rooms)) recovered += item.recovered;
        line("notice", [`*** Recovered ${recovered} missed message(s).`]);
        break;
      }
      case "rooms":
        rooms = event.rooms;
        line("notice", [`Your rooms: ${rooms.map((r) => `#${r}${r === event.current ? " (current)" : ""}`).join(", ")}`]);
        break;
      case "system":
        line("system", [`*** ${event.text}`], event.room);
        break;
      case "error":
        line("error", [`Error: ${event.message} (${event.code})`]);
        break;
      default:
        break; // unknown events are ignored, as the protocol asks
    }
  }

  function forgetRoom(room) {
    rooms = rooms.filter((r) => r !== room);
    if (current === room) current = rooms.length ? rooms[rooms.length - 1] : null;
  }

  // ------------------------------------------------------------------ commands

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
        current = rest.replace(/^#/, "");
        if (!rooms.includes(current)) rooms.push(current);
        return { type: "join", room: rest };
      case "leave": return { type: "leave", room: rest || current || "" };
      case "who": return { type: "who", room: rest || current || undefined };
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
      params.set("session", session);
      const cursors = Object.entries(lastIds).map(([room, id]) => `${room}:${id}`);
      if (cursors.length) params.set("last", cursors.join(","));
    } else {
      const name = $("name").value.trim();
      const room = $("room").value.trim();
      if (name) params.set("name", name);
      if (room) params.set("room", room);
      params.set("history", "20");
    }
    return `${scheme}//${location.host}/ws?${params}`;
  }

  function setConnected(connected) {
    text.disabled = !connected;
    $("send").disabled = !connected;
    $("connect").disabled = connected || wanted;
    $("disconnect").disabled = !wanted;
    if (connected) text.focus();
  }

  function open() {
    clearTimeout(retryTimer);
    setState("Connecting...");
    socket = new WebSocket(socketUrl(), "chat.v1");
    socket.addEventListener("open", () => setConnected(true));
    socket.addEventListener("message", (message) => {
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        line("error", [`Could not read a server message: ${error}`]);
      }
    });
    socket.addEventListener("close", (event) => {
      setConnected(false);
      socket = null;
      const final = NO_RECONNECT[event.code];
      if (final || !wanted) {
        wanted = false;
        const why = event.reason ? `: ${event.reason}` : "";
        const words = final ? `${final}${event.code >= 4500 ? why : ""}` : "Disconnected.";
        setState(`${words} (${event.code})`, event.code >= 4000);
        line(event.code >= 4000 ? "error" : "notice", [`*** ${words} (close ${event.code})`]);
        session = event.code >= 4500 ? "" : session;
        setConnected(false);
        return;
      }
      setState(`Connection lost (${event.code}); reconnecting in ${Math.round(retryDelay / 1000)} s...`, true);
      retryTimer = setTimeout(open, retryDelay * (0.5 + Math.random()));
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (socket) return;
    wanted = true;
    session = "";
    lastIds = {};
    log.replaceChildren();
    setConnected(false);
    open();
  });

  $("disconnect").addEventListener("click", () => {
    wanted = false;
    clearTimeout(retryTimer);
    if (socket) socket.close(1000, "bye");
    setConnected(false);
  });

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = text.value;
    if (!input.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    const payload = command(input);
    if (payload) socket.send(JSON.stringify(payload));
    text.value = "";
  });
})();

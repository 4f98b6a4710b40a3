// The browser chat client on the chat.v1 JSON dialect (see docs/protocol.md).
// Every name and text from the server goes into the page through textContent only.
// Who is who (docs/protocol.md): the page shows whether you are a guest, a
// registered name or a user your site signed in, and has dialogs to log in,
// register, change the password and unregister. The resume token lives in
// sessionStorage (this tab only), so a reload comes back as the same user.
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
    4001: "This chat was opened in another window or tab, or your account logged in elsewhere.",
    4401: "The server refused your sign-in",
    4500: "You were kicked by an operator",
    4501: "You are banned",
  };
  // Codes after which reconnecting cannot help; 4401 is a refusal of these credentials.
  const FINAL_CODES = new Set([1000, 1008, 1009, 4001, 4401, 4500, 4501]);
  // Error codes of sign-in and account commands, in a person's words.
  const ACCOUNT_WORDS = {
    login_failed: "Wrong name or password.",
    account_locked: "This account is locked by an operator.",
    name_registered: "This name is registered \u2014 log in or pick another.",
    name_taken: "Someone here is using that name now; pick another.",
    already_registered: "You are already logged into a registered name.",
    not_registered: "You are not logged into a registered name.",
    login_disabled: "This chat signs people in through its site, not with a password here.",
    token_user: "Your site signed you in here, so there is no password to manage.",
    rate_limited: "Slow down: too many messages at once. Try again in a moment.",
    name_locked: "You are logged in: your registered name is your name here.",
    login_required: "Log in or register to talk here (guests can read).",
  };
  const IDENTITY_WORDS = { guest: "guest", registered: "registered", token: "signed in by the site" };
  const SESSION_KEY = "chat.session"; // sessionStorage: survives a reload, not shared with other tabs
  // What guests may do: the server writes its --auth policy into the page.
  const policy = (document.querySelector('meta[name="chat-auth"]') || {}).content || "guests";
  const MAX_LINES = 2000; // per room

  let socket = null;
  let me = null;
  let identity = null; // guest, registered or token, from welcome and identified
  let session = loadSession();
  let credentials = null; // the next connect's first frame: {name, password} or {token}
  let siteToken = takeFragmentToken();
  let wantedName = ""; // the name asked for last (connect or /nick), for a name_registered prompt
  let pending = null; // the account dialog waiting for an answer: {kind, stage?, name?, password?}
  let restoring = false; // connecting with a session kept over a page reload
  let goodbye = ""; // what to say when a close the page asked for arrives
  const rooms = new Map(); // name -> {log, unread, members: Map(id -> name)}
  let current = null;
  let lastIds = {}; // resume cursors: room -> newest message id seen
  let joining = new Set();
  let wanted = false; // the user wants to be connected
  let outage = false; // a "connection lost" line is shown; say "reconnected" once back
  let retryDelay = 1000;
  let retryTimer = null;

  // ------------------------------------------------------------------ storage

  function loadSession() {
    try {
      return sessionStorage.getItem(SESSION_KEY) || "";
    } catch (error) {
      return ""; // storage disabled: resume works within this page load only
    }
  }

  function setSession(token) {
    session = token || "";
    try {
      if (session) sessionStorage.setItem(SESSION_KEY, session);
      else sessionStorage.removeItem(SESSION_KEY);
    } catch (error) {
      // storage disabled: nothing kept over a reload
    }
  }

  // A site's connection token handed over as #token=...: fragments never reach
  // a server, and the page drops it from the address bar and the history at once.
  function takeFragmentToken() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = fragment.get("token") || "";
    if (token) history.replaceState(null, "", location.pathname + location.search);
    return token;
  }

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

  // ------------------------------------------------------------------ who am I

  function isDefaultName(name) {
    return /^User \d+$/.test(name || "");
  }

  // Start a sentence from a server message ("wrong name or password" -> "Wrong name or password.").
  function sentence(message) {
    const text = String(message || "").trim();
    if (!text) return "";
    const capital = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(capital) ? capital : `${capital}.`;
  }

  function errorWords(event, kind) {
    if (event.code === "login_rate_limited") return sentence(event.message);
    // Changing or dropping a password checks only the password: say which one.
    if (event.code === "login_failed" && kind === "password") return "The current password is wrong.";
    if (event.code === "login_failed" && kind === "unregister") return "Wrong password.";
    return ACCOUNT_WORDS[event.code] || sentence(event.message);
  }

  function renderIdentity() {
    const badge = $("identity");
    const live = Boolean(me && identity && socket && socket.readyState === WebSocket.OPEN);
    badge.hidden = !live;
    badge.dataset.identity = live ? identity : "none";
    badge.replaceChildren();
    if (live) {
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = IDENTITY_WORDS[identity] || identity;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = me.name;
      badge.append(name, " ", kind);
      badge.title = identity === "registered" ? `You are logged in as ${me.name}.`
        : identity === "token" ? `Your site signed you in as ${me.name}.`
        : `You are a guest named ${me.name}; register the name to keep it.`;
    }
    const passwords = policy !== "token" && identity !== "token";
    $("login-button").hidden = !passwords || (live && identity !== "guest");
    $("register-button").hidden = !passwords || !live || identity !== "guest";
    for (const id of ["password-button", "unregister-button", "logout-button"]) {
      $(id).hidden = !live || identity !== "registered";
    }
    renderHint(live);
  }

  // What this chat's policy means for you, right under the state line.
  function renderHint(live) {
    const hint = $("auth-hint");
    let words = "";
    if (policy === "registered" && (!live || identity === "guest")) {
      words = "Guests can read here. Log in or register your name to talk.";
    } else if (policy === "token" && !(live && identity === "token")) {
      words = "This chat is for the members of its site: open it from the site's link to sign in.";
    }
    hint.textContent = words;
    hint.hidden = !words;
    text.placeholder = live && policy === "registered" && identity === "guest"
      ? "Log in or register to talk (guests can read); /help for commands"
      : "Message, or /help for commands";
  }

  // ------------------------------------------------------------------ account dialogs

  const dialogs = {
    login: $("login-dialog"),
    register: $("register-dialog"),
    password: $("password-dialog"),
    unregister: $("unregister-dialog"),
  };

  function dialogError(kind, message) {
    const box = $(`${kind}-error`);
    box.textContent = message || "";
    box.hidden = !message;
  }

  function setBusy(kind, busy) {
    $(`${kind}-submit`).disabled = busy;
  }

  // Open one of the dialogs; `note` says why it opened (e.g. a refused name).
  function openDialog(kind, options = {}) {
    for (const [other, box] of Object.entries(dialogs)) if (other !== kind && box.open) box.close();
    const dialog = dialogs[kind];
    const form = dialog.querySelector("form");
    form.reset();
    dialogError(kind, options.error || "");
    setBusy(kind, false);
    const name = options.name !== undefined ? options.name : me && !isDefaultName(me.name) ? me.name : "";
    if (kind === "login") {
      $("login-name").value = name;
      $("login-note").textContent = options.note || "";
      $("login-note").hidden = !options.note;
    } else if (kind === "register") {
      $("register-name").value = name;
    } else {
      $(`${kind}-name`).value = me ? me.name : "";
    }
    if (!dialog.open) dialog.showModal();
    const first = [...form.querySelectorAll("input:not([readonly])")].find((input) => !input.value);
    (first || form.querySelector("input:not([readonly])")).focus();
  }

  function closeDialog(kind) {
    if (pending && pending.kind === kind) pending = null;
    if (dialogs[kind].open) dialogs[kind].close();
  }

  function connected() {
    return Boolean(socket && socket.readyState === WebSocket.OPEN && me);
  }

  // Start a dialog's command unless one of `refusals` ([refused, words]) holds:
  // the first that does is shown in the dialog instead.
  function begin(kind, refusals) {
    const refused = refusals.find(([holds]) => holds);
    dialogError(kind, refused ? refused[1] : "");
    if (!refused) setBusy(kind, true);
    return !refused;
  }

  function submitLogin() {
    const name = $("login-name").value.trim();
    const password = $("login-password").value;
    if (!begin("login", [[!name || !password, "Enter the registered name and its password."]])) {
      return;
    }
    pending = { kind: "login", name };
    if (connected()) {
      send({ type: "login", name, password, ref: "account:login" });
    } else {
      // Not connected: log in with the connection's first frame, not in the URL.
      credentials = { name, password };
      connect({ fresh: true });
    }
  }

  function submitRegister() {
    const name = $("register-name").value.trim();
    const password = $("register-password").value;
    const refusals = [
      [!name, "Choose the name to register."],
      [password !== $("register-confirm").value, "The two passwords do not match."],
      [!connected(), "Connect first, then register your name."],
    ];
    if (!begin("register", refusals)) return;
    pending = { kind: "register", name, password };
    if (name === me.name) {
      send({ type: "register", password, ref: "account:register" });
    } else {
      // Hold the name first; the own nick event then sends the register.
      pending.stage = "nick";
      wantedName = name;
      send({ type: "nick", name, ref: "account:nick" });
    }
  }

  function submitPassword() {
    const old = $("password-old").value;
    const fresh = $("password-new").value;
    const refusals = [
      [!old || !fresh, "Enter your current password and a new one."],
      [fresh !== $("password-confirm").value, "The two new passwords do not match."],
      [!connected(), "Connect first, then change your password."],
    ];
    if (!begin("password", refusals)) return;
    pending = { kind: "password" };
    send({ type: "password", old, new: fresh, ref: "account:password" });
  }

  function submitUnregister() {
    const password = $("unregister-password").value;
    const refusals = [
      [!password, "Enter your password."],
      [!connected(), "Connect first, then unregister your name."],
    ];
    if (!begin("unregister", refusals)) return;
    pending = { kind: "unregister" };
    send({ type: "unregister", password, ref: "account:unregister" });
  }

  // An error answers the open dialog's command: show it there, in words.
  function accountError(event) {
    const kind = pending.kind;
    pending = null;
    setBusy(kind, false);
    dialogError(kind, errorWords(event, kind));
    const field = kind === "login" ? "login-password" : kind === "register" && event.code.startsWith("name")
      ? "register-name" : kind === "register" ? "register-password" : kind === "password" ? "password-old"
      : "unregister-password";
    $(field).select();
    $(field).focus();
  }

  function onIdentified(event) {
    me = event.user;
    identity = event.identity;
    if (event.session) setSession(event.session); // a login's or registration's token: the guest's one has ended
    const done = pending ? pending.kind : null;
    if (done) closeDialog(done);
    if (identity === "registered") {
      line("system", [done === "register"
        ? `*** The name ${me.name} is registered to you now: log in to it from anywhere.`
        : `*** You are logged in as ${me.name}.`]);
    } else if (identity === "guest") {
      line("system", [`*** ${me.name} is not registered any more; you are a guest.`]);
    }
    // A login makes this connection another user id: refresh who is here.
    for (const name of rooms.keys()) send({ type: "who", room: name });
    renderIdentity();
    renderPeople();
    showState();
  }

  // A registered name was refused to this guest (at connect or on /nick).
  function offerLogin(event) {
    const name = wantedName || "";
    wantedName = ""; // asked once; a later refusal names its own cause
    if (!name) {
      line("error", [`Error: ${event.message}`]); // e.g. a resumed session's name, registered since
      return;
    }
    const words = `"${name}" is registered \u2014 log in or pick another name.`;
    line("error", [`*** ${words}`]);
    if (policy === "token" || identity === "token") return;
    openDialog("login", { name, note: words });
  }

  function logOut() {
    goodbye = "Logged out.";
    wanted = false;
    clearTimeout(retryTimer);
    credentials = null;
    setSession("");
    if (socket) socket.close(1000, "logged out");
    else showState(goodbye);
    setConnected(false);
  }

  // ------------------------------------------------------------------ events

  function onWelcome(event) {
    const hadSession = Boolean(session) && !restoring;
    const previous = [...rooms.keys()];
    me = event.user;
    identity = event.identity || "guest";
    setSession(event.session);
    retryDelay = 1000;
    const signedIn = credentials;
    credentials = null; // the session token says who we are from now on
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
    if (restoring) {
      // Back after a reload: the first room's history came with the welcome.
      for (const name of event.rooms.slice(1)) send({ type: "history", room: name, limit: 20 });
    }
    renderIdentity();
    const where = event.rooms.map((r) => `#${r}`).join(", ");
    const who = identity === "registered" ? " You are logged in." : identity === "token" ? " Your site signed you in." : "";
    if (outage) {
      line("notice", ["*** Reconnected."]);
      outage = false;
    } else if (restoring && event.resumed) {
      line("notice", [`Welcome back, ${me.name}!${who} You are in ${where}.`]);
    } else if (!hadSession) {
      line("notice", [`Welcome, ${me.name}!${who} You are in ${where}. Type /help for commands.`]);
    }
    restoring = false;
    if (signedIn && signedIn.password !== undefined) closeDialog("login"); // logged in
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
        if (me && event.user.id === me.id) {
          me = event.user;
          if (pending && pending.kind === "register" && pending.stage === "nick") {
            pending.stage = "register"; // the name is held now: register it
            send({ type: "register", password: pending.password, ref: "account:register" });
          }
        }
        line("notice", [`${event.old} is now known as ${event.user.name}.`], { ts: event.ts });
        renderPeople();
        renderIdentity();
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
        // The answer to a password change is a server-wide system event.
        if (pending && pending.kind === "password" && !event.room) closeDialog("password");
        line("system", [`*** ${event.text}`], { room: event.room });
        break;
      case "identified":
        onIdentified(event);
        break;
      case "error":
        onError(event);
        break;
      default:
        break; // unknown events are ignored, as the protocol asks
    }
  }

  function onError(event) {
    const ref = typeof event.ref === "string" ? event.ref : "";
    if (ref.startsWith("join:")) joining.delete(ref.slice(5));
    // A rate_limited refusal carries no ref: it may be the open dialog's answer.
    if (pending && (ref.startsWith("account:") || event.code === "rate_limited")) {
      accountError(event);
      return;
    }
    if (event.code === "name_registered") {
      offerLogin(event);
      return;
    }
    if (event.code === "login_required") {
      line("error", [`*** ${ACCOUNT_WORDS.login_required}`]);
      return;
    }
    line("error", [`Error: ${event.message}`]);
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
      case "nick":
        wantedName = rest;
        return { type: "nick", name: rest };
      // Passwords never go through the message box: these open the dialogs.
      case "login":
        openDialog("login", { name: rest.split(" ")[0] || undefined });
        return null;
      case "register":
      case "password":
      case "unregister":
        openDialog(verb);
        return null;
      case "logout":
        if (identity === "registered") logOut();
        else line("error", ["*** You are not logged in."]);
        return null;
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
      else params.set("history", "20"); // a reloaded page: show the recent talk again
    } else {
      const name = $("name").value.trim();
      const first = $("room").value.trim();
      if (name && !credentials) params.set("name", name);
      if (first) params.set("room", first);
      params.set("history", "20");
    }
    // Credentials go in the first frame, never in the URL (URLs end up in logs).
    if (credentials) params.set("auth", "frame");
    return `${scheme}//${location.host}/ws?${params}`;
  }

  function setConnected(isConnected) {
    text.disabled = !isConnected;
    $("send").disabled = !isConnected;
    $("new-room").disabled = !isConnected;
    $("join-room").disabled = !isConnected;
    $("connect").disabled = isConnected || wanted || (policy === "token" && !siteToken && !session);
    $("disconnect").disabled = !wanted;
    renderIdentity();
    if (isConnected && !Object.values(dialogs).some((box) => box.open)) text.focus();
  }

  function open() {
    clearTimeout(retryTimer);
    if (!outage) showState("Connecting...");
    const auth = credentials;
    const ws = new WebSocket(socketUrl(), "chat.v1");
    socket = ws;
    // Events of a socket the page has replaced since are no news.
    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      if (auth) ws.send(JSON.stringify({ type: "auth", ...auth }));
      setConnected(true);
    });
    ws.addEventListener("message", (message) => {
      if (socket !== ws) return;
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        line("error", [`Could not read a server message: ${error}`]);
      }
    });
    ws.addEventListener("close", (event) => {
      if (socket === ws) onClose(event, auth);
    });
  }

  // Start over, as a new connection (fresh) or resuming the kept session.
  function connect({ fresh }) {
    if (socket) {
      const old = socket;
      socket = null;
      old.close(1000, "bye");
    }
    wanted = true;
    outage = false;
    goodbye = "";
    if (fresh) {
      setSession("");
      wantedName = credentials ? "" : $("name").value.trim();
    }
    restoring = !fresh;
    me = null;
    identity = null;
    lastIds = {};
    joining = new Set();
    for (const name of [...rooms.keys()]) rooms.get(name).log.remove();
    rooms.clear();
    current = null;
    renderRooms();
    renderPeople();
    setConnected(false);
    open();
  }

  // 4401: these credentials will not do; say why and offer what can work.
  function refused(reason, auth, was) {
    const why = sentence(reason) || "Your sign-in was refused.";
    setSession("");
    credentials = null;
    if (auth && auth.password !== undefined) {
      const said = `Not logged in: ${why}`;
      showState(said, true);
      line("error", [`*** ${said}`]);
      pending = null;
      if (!dialogs.login.open) openDialog("login", { name: auth.name });
      $("login-password").value = "";
      setBusy("login", false);
      dialogError("login", why);
      $("login-password").focus();
      return;
    }
    const site = (auth && auth.token !== undefined) || policy === "token" || was === "token";
    if (auth && auth.token !== undefined) siteToken = ""; // refused: do not offer it again
    const said = site
      ? `${CLOSE_WORDS[4401]}: ${why} Open the chat from your site's link again to sign in.`
      : `${CLOSE_WORDS[4401]}: ${why} Log in, or connect again as a guest.`;
    showState(said, true);
    line("error", [`*** ${said}`]);
    if (!site) openDialog("login", { note: why });
  }

  function onClose(event, auth) {
    socket = null;
    setConnected(false);
    const words = CLOSE_WORDS[event.code] || `Disconnected (code ${event.code}).`;
    if (FINAL_CODES.has(event.code) || !wanted) {
      wanted = false;
      clearTimeout(retryTimer);
      // Gone for good: nobody is "here" any more; the logs stay readable.
      for (const entry of rooms.values()) entry.members.clear();
      renderPeople();
      const was = identity;
      identity = null;
      setConnected(false);
      if (event.code === 4401) {
        refused(event.reason, auth, was);
        setConnected(false); // a refused site token no longer offers Connect
        return;
      }
      const removed = event.code === 4500 || event.code === 4501;
      const said = goodbye || (removed ? `${words}${event.reason ? `: ${event.reason}` : ""}.` : words);
      showState(said, event.code !== 1000);
      line(event.code === 1000 ? "notice" : "error", [`*** ${said}`]);
      goodbye = "";
      // The page chose to stop, or the server will not have this session back.
      setSession("");
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
    credentials = siteToken ? { token: siteToken } : null;
    connect({ fresh: true });
  });

  $("disconnect").addEventListener("click", () => {
    wanted = false;
    clearTimeout(retryTimer);
    if (socket) socket.close(1000, "bye");
    else showState("Disconnected.");
    setSession("");
    setConnected(false);
  });

  const submits = { login: submitLogin, register: submitRegister, password: submitPassword, unregister: submitUnregister };
  for (const [kind, dialog] of Object.entries(dialogs)) {
    // Enter submits (a form's own behaviour); Escape cancels (the dialog's).
    dialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      submits[kind]();
    });
    dialog.querySelector("button.cancel").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      if (pending && pending.kind === kind) pending = null;
      for (const input of dialog.querySelectorAll("input[type=password]")) input.value = "";
      if (connected()) text.focus();
    });
  }
  $("login-button").addEventListener("click", () => openDialog("login"));
  $("register-button").addEventListener("click", () => openDialog("register"));
  $("password-button").addEventListener("click", () => openDialog("password"));
  $("unregister-button").addEventListener("click", () => openDialog("unregister"));
  $("logout-button").addEventListener("click", logOut);

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

  // A site's token in the fragment, or a session kept over a reload: connect at once.
  // With both, the token decides who this is; the session resumes if it is the same user.
  renderIdentity();
  if (siteToken) credentials = { token: siteToken };
  if (siteToken || session) connect({ fresh: !session });
  else setConnected(false);
})();

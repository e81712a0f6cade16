// crdtbook's web page: the book, the tape, order entry and the cluster, live.
//
// Theory of operation
// -------------------
// One WebSocket to the node that served this page (/ws, docs/streams.md)
// carries everything: the public channels book, trades and status, and, once
// the account's token is given (an "auth" message: a browser cannot set
// headers on a WebSocket), the orders channel and order entry. Each channel
// keeps the snapshot it was last sent plus the updates since; a message whose
// seq is not the next one, or a "reset", means something was missed, so the
// page subscribes again, which replaces the subscription (messages of the
// old one are skipped until the answer to the new subscribe, which comes just
// before the new snapshot). A lost connection
// is retried with a growing, jittered delay, and everything is subscribed
// again; a quiet connection is pinged, and a dead one closed and retried.
//
// Rules this script keeps
// -----------------------
// * Amounts are decimal strings, and stay so: sums and comparisons are done
//   on BigInt units of 10^-8 (the node's own precision); numbers are made of
//   them only to draw (bar widths, the depth chart).
// * Nothing the node or a user sends is put in the page as HTML: text only.
// * The token lives in this tab's sessionStorage, never in a URL or a cookie.
// * Nothing is fetched from anywhere but this node.
"use strict";

(() => {
  const SCALE = 100000000n; // 10^8: amounts have at most 8 decimal places
  const BOOK_DEPTH = 50; // levels per side the node sends
  const LADDER_ROWS = 12; // levels per side the ladder shows
  const TAPE_ROWS = 100;
  const TOKEN_KEY = "crdtbook.token";
  const PING_EVERY_MS = 15000;
  const DEAD_AFTER_MS = 40000; // nothing heard for this long: the connection is gone
  const RETRY_FIRST_MS = 500;
  const RETRY_MAX_MS = 10000;

  const $ = (id) => document.getElementById(id);

  // -- amounts -----------------------------------------------------------
  const DECIMAL = /^(\d{1,13})(?:\.(\d{1,8}))?$/;

  function units(text) { // a decimal string as BigInt units of 10^-8, or null
    const m = DECIMAL.exec(text);
    if (m === null) return null;
    return BigInt(m[1]) * SCALE + BigInt((m[2] || "").padEnd(8, "0"));
  }

  function fmt(u) {
    const sign = u < 0n ? "-" : "";
    if (u < 0n) u = -u;
    const frac = (u % SCALE).toString().padStart(8, "0").replace(/0+$/, "");
    return sign + (u / SCALE).toString() + (frac ? "." + frac : "");
  }

  const short = (id) => (id ? String(id).slice(0, 10) : "?");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  // -- the connection ------------------------------------------------------
  const conn = {
    ws: null,
    nextId: 1,
    pending: new Map(), // command id -> {resolve, reject, sub}
    retryMs: RETRY_FIRST_MS,
    lastHeard: 0,
    authed: null, // the account name once the node took the token
    channels: {}, // name -> {seq, answered, awaiting}
  };

  function setConn(state, text) {
    const box = $("conn");
    box.dataset.state = state;
    $("conn-text").textContent = text;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setConn("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(scheme + location.host + "/ws");
    } catch (err) {
      retryLater(String(err));
      return;
    }
    conn.ws = ws;
    ws.onopen = () => {
      conn.retryMs = RETRY_FIRST_MS;
      conn.lastHeard = Date.now();
      setConn("open", "live");
      subscribe("book", { depth: BOOK_DEPTH });
      subscribe("trades");
      subscribe("status");
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) authenticate(token);
    };
    ws.onmessage = (event) => {
      conn.lastHeard = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        console.warn("not JSON from the node", err);
        return;
      }
      handle(msg);
    };
    ws.onclose = (event) => {
      if (conn.ws !== ws) return; // an old socket we replaced on purpose
      conn.ws = null;
      conn.authed = null;
      for (const { reject } of conn.pending.values()) reject(new Error("connection lost"));
      conn.pending.clear();
      conn.channels = {};
      retryLater(event.reason || (event.code === 1006 ? "connection lost" : `closed (${event.code})`));
    };
  }

  function retryLater(why) {
    const wait = Math.round(conn.retryMs * (0.5 + Math.random() / 2));
    conn.retryMs = Math.min(RETRY_MAX_MS, conn.retryMs * 2);
    setConn("closed", `${why}; retrying in ${(wait / 1000).toFixed(1)} s`);
    setTimeout(connect, wait);
  }

  function reconnectNow() { // e.g. to drop an authenticated session
    const ws = conn.ws;
    conn.ws = null;
    conn.authed = null;
    conn.channels = {};
    for (const { reject } of conn.pending.values()) reject(new Error("connection closed"));
    conn.pending.clear();
    if (ws) ws.close(1000, "token forgotten");
    connect();
  }

  setInterval(() => {
    const ws = conn.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - conn.lastHeard > DEAD_AFTER_MS) {
      ws.close(4000, "node silent");
      return;
    }
    command("ping").catch(() => {});
  }, PING_EVERY_MS);

  function command(op, fields, sub) { // one command; resolves with its answer
    const ws = conn.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error("not connected to the node"));
    }
    const id = conn.nextId++;
    ws.send(JSON.stringify({ op, id, ...(fields || {}) }));
    if (op === "ping") return Promise.resolve(null); // answered with a pong, not an answer
    return new Promise((resolve, reject) => conn.pending.set(id, { resolve, reject, sub }));
  }

  function subscribe(channel, fields) {
    const sub = { seq: 0, answered: false, awaiting: true };
    conn.channels[channel] = sub;
    command("subscribe", { channel, ...(fields || {}) }, sub).then((answer) => {
      if (answer.ok) return;
      console.warn(`subscribe ${channel}: ${answer.detail || answer.error}`);
      if (channel === "orders") $("orders-note").textContent = `Your orders: ${refusal(answer)}`;
    }, () => {});
  }

  function resubscribe(channel) { // subscribing again replaces the subscription
    subscribe(channel, channel === "book" ? { depth: BOOK_DEPTH } : undefined);
  }

  function handle(msg) {
    if (msg.type === "answer") {
      const waiting = conn.pending.get(msg.id);
      if (waiting) {
        conn.pending.delete(msg.id);
        if (waiting.sub) waiting.sub.answered = true; // now, before the next message
        waiting.resolve(msg);
      }
      return;
    }
    if (msg.type === "pong") return;
    const channel = msg.channel;
    const state = conn.channels[channel];
    if (!state || !state.answered) return; // not subscribed, or the old subscription's
    if (msg.type === "reset") {
      resubscribe(channel);
      return;
    }
    if (state.awaiting) { // only a snapshot starts a subscription (status: every message is whole)
      if (msg.type !== "snapshot" && channel !== "status") return;
      state.awaiting = false;
    } else if (msg.seq !== state.seq + 1) {
      console.warn(`${channel}: seq ${msg.seq} after ${state.seq}; subscribing again`);
      resubscribe(channel);
      return;
    }
    state.seq = msg.seq;
    const apply = { book: onBook, trades: onTrades, orders: onOrders, status: onStatus }[channel];
    if (apply) apply(msg);
  }

  // -- the book: ladder and depth chart ----------------------------------
  const book = { bids: new Map(), asks: new Map() }; // price units (string) -> {price, qty, p, q}
  let drawPending = false;

  function setLevels(side, levels) {
    for (const [price, qty] of levels) {
      const p = units(price), q = units(qty);
      if (p === null || q === null) continue;
      if (q === 0n) side.delete(p.toString());
      else side.set(p.toString(), { price, qty, p, q });
    }
  }

  function onBook(msg) {
    if (msg.type === "snapshot") {
      book.bids.clear();
      book.asks.clear();
    }
    setLevels(book.bids, msg.bids || []);
    setLevels(book.asks, msg.asks || []);
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(() => { drawPending = false; drawBook(); });
    }
  }

  function sorted(side, descending) {
    const levels = [...side.values()];
    levels.sort((a, b) => (a.p < b.p ? -1 : a.p > b.p ? 1 : 0) * (descending ? -1 : 1));
    return levels;
  }

  function ladderRows(levels, kind, maxQ) {
    let total = 0n;
    return levels.map((level) => {
      total += level.q;
      const row = el("div", { class: `level ${kind}`, "data-testid": `${kind}-row`,
        "data-price": level.price, "data-qty": level.qty, title: "click: use this price" },
      el("span", { class: "bar" }),
      el("span", { class: "price", text: level.price }),
      el("span", { class: "qty", text: level.qty }),
      el("span", { class: "total", text: fmt(total) }));
      // drawing only: the bar's width is the level's share of the largest level shown
      row.firstChild.style.width = `${(100 * Number(level.q)) / Number(maxQ)}%`;
      row.addEventListener("click", () => usePrice(level.price, kind === "ask" ? "buy" : "sell"));
      return row;
    });
  }

  function drawBook() {
    const bids = sorted(book.bids, true), asks = sorted(book.asks, false);
    const shownBids = bids.slice(0, LADDER_ROWS), shownAsks = asks.slice(0, LADDER_ROWS);
    let maxQ = 1n;
    for (const l of shownBids.concat(shownAsks)) if (l.q > maxQ) maxQ = l.q;
    $("asks").replaceChildren(...ladderRows(shownAsks, "ask", maxQ).reverse());
    $("bids").replaceChildren(...ladderRows(shownBids, "bid", maxQ));
    const spread = $("spread");
    if (bids.length && asks.length) {
      spread.textContent = `spread ${fmt(asks[0].p - bids[0].p)}`;
    } else {
      spread.textContent = bids.length || asks.length ? "one-sided book" : "no quotes yet";
    }
    drawDepth(bids, asks);
  }

  function drawDepth(bids, asks) {
    const canvas = $("depth");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600, height = canvas.clientHeight || 220;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const styles = getComputedStyle(document.body);
    const color = (name) => styles.getPropertyValue(name).trim();
    g.font = `11px ${styles.fontFamily}`;
    const note = $("depth-note");
    if (!bids.length && !asks.length) {
      g.fillStyle = color("--muted");
      g.textAlign = "center";
      g.fillText("no orders rest in the book", width / 2, height / 2);
      note.textContent = "";
      return;
    }
    // cumulative steps, as numbers: drawing only
    const steps = (levels) => {
      let total = 0n;
      return levels.map((l) => { total += l.q; return [Number(l.p) / 1e8, Number(total) / 1e8]; });
    };
    const b = steps(bids), a = steps(asks);
    const prices = b.concat(a).map((s) => s[0]);
    let lo = Math.min(...prices), hi = Math.max(...prices);
    if (hi === lo) { lo -= lo / 10 || 1; hi += hi / 10 || 1; }
    const pad = (hi - lo) * 0.12; // room for the outermost steps to show as areas
    lo = Math.max(0, lo - pad); hi += pad;
    const top = Math.max(b.length ? b[b.length - 1][1] : 0, a.length ? a[a.length - 1][1] : 0);
    const left = 8, right = width - 8, base = height - 20, roof = 14;
    const x = (p) => left + ((p - lo) / (hi - lo)) * (right - left);
    const y = (q) => base - (q / top) * (base - roof);

    const area = (pts, edge, fill, line) => {
      if (!pts.length) return;
      g.beginPath();
      g.moveTo(x(pts[0][0]), base);
      let level = 0;
      for (const [p, q] of pts) { g.lineTo(x(p), y(level)); g.lineTo(x(p), y(q)); level = q; }
      g.lineTo(edge, y(level));
      g.lineTo(edge, base);
      g.closePath();
      g.fillStyle = fill;
      g.fill();
      g.strokeStyle = line;
      g.lineWidth = 1.5;
      g.stroke();
    };
    area(b, left, color("--buy-soft"), color("--buy"));
    area(a, right, color("--sell-soft"), color("--sell"));

    g.strokeStyle = color("--line");
    g.beginPath(); g.moveTo(left, base + 0.5); g.lineTo(right, base + 0.5); g.stroke();
    g.fillStyle = color("--muted");
    g.textAlign = "left"; g.fillText(fmtAxis(lo), left, height - 5);
    g.textAlign = "right"; g.fillText(fmtAxis(hi), right, height - 5);
    g.fillText(`${fmtAxis(top)} cumulative`, right, 11);
    const bestBid = bids.length ? bids[0].price : "none", bestAsk = asks.length ? asks[0].price : "none";
    note.textContent = `best bid ${bestBid} · best ask ${bestAsk} · ${bids.length} bid and ${asks.length} ask levels`;
  }

  const fmtAxis = (n) => Number(n.toPrecision(6)).toString(); // labels only

  window.addEventListener("resize", () => drawBook());

  // -- the tape ----------------------------------------------------------
  const tape = new Map(); // fill id -> its newest row

  function tapeRow(fill) {
    const side = fill.taker_side === "sell" ? "sell" : "buy";
    const row = el("li", { "data-testid": "trade", "data-id": fill.id },
      el("span", { class: "time", text: (fill.time || "").slice(11, 19) }),
      el("span", { class: `side ${side}`, text: side }),
      el("span", { class: "price", text: fill.price }),
      el("span", { class: "qty", text: fill.qty }),
      el("span", { class: "mark" }));
    setTradeState(row, fill.final ? "final" : "provisional");
    return row;
  }

  function setTradeState(row, state) {
    row.className = `trade ${state}`;
    row.dataset.state = state;
    row.dataset.final = state === "final" ? "true" : "false";
    const mark = row.querySelector(".mark");
    mark.textContent = { final: "● final", provisional: "◌ provisional", retracted: "retracted" }[state];
    mark.title = {
      final: "final: this trade can no longer change",
      provisional: "provisional: an event that arrives late could still undo it",
      retracted: "undone by an earlier event that arrived late; its replacement is listed anew",
    }[state];
  }

  function addTrade(fill) {
    const list = $("tape");
    const row = tapeRow(fill);
    tape.set(fill.id, row);
    list.prepend(row);
    while (list.children.length > TAPE_ROWS) {
      const old = list.lastElementChild;
      if (tape.get(old.dataset.id) === old) tape.delete(old.dataset.id);
      old.remove();
    }
  }

  function onTrades(msg) {
    if (msg.type === "snapshot") {
      tape.clear();
      $("tape").replaceChildren();
      for (const fill of msg.trades || []) addTrade(fill);
    } else if (msg.type === "trade") {
      addTrade(msg.trade);
    } else if (msg.type === "final" || msg.type === "retract") {
      for (const id of msg.ids || []) {
        const row = tape.get(id);
        if (row && row.dataset.state === "provisional") {
          setTradeState(row, msg.type === "final" ? "final" : "retracted");
        }
      }
    }
  }

  // -- the account: token, order form, open orders ----------------------
  const orders = new Map(); // order id -> ORDER

  function authenticate(token) {
    command("auth", { token }).then((answer) => {
      if (!answer.ok) {
        sessionStorage.removeItem(TOKEN_KEY);
        showSignedIn(null);
        formMessage(`The node refused the token: ${answer.detail || answer.error}`, "error");
        return;
      }
      const result = answer.result || {};
      conn.authed = result.account === undefined ? "this token's account" : (result.account || "(admin)");
      showSignedIn(conn.authed);
      subscribe("orders");
    }, () => {});
  }

  function showSignedIn(account) {
    $("token-form").hidden = account !== null;
    $("signed-in").hidden = account === null;
    $("account-name").textContent = account || "";
    if (account === null) {
      orders.clear();
      drawOrders();
      $("orders-note").textContent = "Use a token to see your orders.";
    }
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    input.value = "";
    if (!token) {
      formMessage("Paste an account token first (crdtbook account add NAME prints one).", "error");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    formMessage("", "");
    if (conn.ws && conn.ws.readyState === WebSocket.OPEN) authenticate(token);
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn(null);
    formMessage("Token forgotten.", "");
    reconnectNow(); // a fresh connection is no longer authenticated
  });

  function formMessage(text, kind) {
    const box = $("form-msg");
    box.textContent = text;
    box.dataset.kind = kind;
  }

  function currentSide() {
    return document.querySelector('input[name="side"]:checked').value;
  }

  function syncForm() {
    const side = currentSide(), market = $("type").value === "market";
    const button = $("place");
    button.className = `place ${side}`;
    button.textContent = `Place ${side} order`;
    $("price").disabled = market;
    $("price").placeholder = market ? "market orders take no price" : "e.g. 12";
  }

  function usePrice(price, side) {
    document.querySelector(`input[name="side"][value="${side}"]`).checked = true;
    if ($("type").value === "market") $("type").value = "limit";
    $("price").value = price;
    syncForm();
    $("qty").focus();
  }

  for (const input of document.querySelectorAll('input[name="side"]')) {
    input.addEventListener("change", syncForm);
  }
  $("type").addEventListener("change", syncForm);

  function checkAmount(text, name) { // a friendly first look; the node has the last word
    const u = units(text);
    if (u === null) return `${name} must be a decimal number such as 12 or 0.5 (at most 8 decimal places)`;
    if (u === 0n) return `${name} must be more than 0`;
    return null;
  }

  function refusal(answer) {
    const retry = answer.retry_after_s ? `; retry in ${answer.retry_after_s} s` : "";
    return `Refused (${answer.status} ${answer.error}): ${answer.detail || ""}${retry}`;
  }

  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!conn.authed) {
      formMessage("Use an account token above to place orders.", "error");
      return;
    }
    const type = $("type").value, qty = $("qty").value.trim(), price = $("price").value.trim();
    const order = { side: currentSide(), type, qty };
    const problem = checkAmount(qty, "quantity") || (type === "market" ? null : checkAmount(price, "price"));
    if (problem) {
      formMessage(problem, "error");
      return;
    }
    if (type !== "market") order.price = price;
    const button = $("place");
    button.disabled = true;
    formMessage("placing…", "busy");
    command("order", { order }).then((answer) => {
      if (!answer.ok) {
        formMessage(refusal(answer), "error");
        return;
      }
      const placed = answer.result.order;
      const fills = answer.result.fills || [];
      const traded = fills.reduce((sum, f) => sum + (units(f.qty) || 0n), 0n);
      const at = placed.price === null ? "at market" : `@ ${placed.price}`;
      formMessage(`Placed ${placed.side} ${placed.qty} ${at} (${placed.id}): ${placed.status}` +
        (fills.length ? `, traded ${fmt(traded)} in ${fills.length} fill(s), provisional until final` : ""), "ok");
    }, (err) => {
      formMessage(`${err.message}: the order may or may not have been placed; see your open orders`, "error");
    }).finally(() => { button.disabled = false; });
  });

  function onOrders(msg) {
    if (msg.type === "snapshot") {
      orders.clear();
      for (const o of msg.orders || []) orders.set(o.id, o);
    } else if (msg.type === "order") {
      const o = msg.order;
      if (o.status === "open" || o.status === "pending") orders.set(o.id, o);
      else orders.delete(o.id);
    }
    $("orders-note").textContent = orders.size ? "" : "No open orders.";
    drawOrders();
  }

  function drawOrders() {
    const rows = [...orders.values()].sort((a, b) => (a.clock < b.clock ? 1 : -1));
    $("orders").replaceChildren(...rows.map((o) => {
      const cancel = el("button", { type: "button", class: "cancel", "data-testid": "cancel",
        text: "cancel", title: `cancel ${o.id}` });
      cancel.addEventListener("click", () => cancelOrder(o.id, cancel));
      return el("tr", { "data-testid": "open-order", "data-id": o.id },
        el("td", { class: `side ${o.side}`, text: o.side }),
        el("td", { class: "num", text: o.price === null ? "market" : o.price }),
        el("td", { class: "num", text: o.qty }),
        el("td", { class: "num", text: o.filled }),
        el("td", { text: o.status === "pending" ? `${o.type} (pending)` : o.type }),
        el("td", {}, cancel));
    }));
  }

  function cancelOrder(id, button) {
    button.disabled = true;
    button.textContent = "cancelling…";
    command("cancel", { order: id }).then((answer) => {
      if (!answer.ok) {
        $("orders-note").textContent = `Cancel of ${id}: ${refusal(answer)}`;
        button.disabled = false;
        button.textContent = "cancel";
      }
      // on success the orders channel sends the cancelled order, which drops the row
    }, (err) => {
      $("orders-note").textContent = `Cancel of ${id}: ${err.message}`;
      button.disabled = false;
      button.textContent = "cancel";
    });
  }

  // -- the cluster -------------------------------------------------------
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "not yet";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms ago`;
    if (seconds < 120) return `${seconds.toFixed(1)} s ago`;
    return `${Math.round(seconds / 60)} min ago`;
  }

  function onStatus(msg) {
    const s = msg.status || {};
    $("book-name").textContent = s.book || "?";
    const self = $("node-id");
    self.textContent = short(s.replica);
    self.title = s.replica || "";
    $("final-lag").textContent = s.final_lag_ms === null || s.final_lag_ms === undefined
      ? "not known yet" : `${s.final_lag_ms} ms`;
    const held = s.held_back_by;
    const heldBox = $("held-back");
    heldBox.textContent = held ? `${short(held.replica)}${held.replica === s.replica ? " (this node)" : ""}, ` +
      `${held.behind_ms} ms behind` : "nobody (no frontier yet)";
    heldBox.dataset.replica = held ? held.replica : "";
    heldBox.dataset.slow = held && held.behind_ms > 5000 ? "true" : "false";
    $("events").textContent = `${s.events_total ?? "?"} held${s.joined === false ? " (joining)" : ""}` +
      `${s.caught_up === false ? " (catching up)" : ""}`;
    $("digest").textContent = s.digest ? s.digest.slice(0, 16) : "?";

    const peers = new Map();
    const strangers = [];
    for (const p of s.peers || []) {
      if (p.replica) peers.set(p.replica, p);
      else strangers.push(p);
    }
    const members = s.members || [];
    const rows = members.map((id) => memberRow(id, id === s.replica, peers.get(id), held));
    for (const p of strangers) rows.push(memberRow(null, false, p, held));
    $("members").replaceChildren(...rows);
  }

  function memberRow(id, isSelf, peer, held) {
    let health, kind;
    if (isSelf) { health = "this node"; kind = "self"; }
    else if (!peer) { health = "no address known"; kind = "unknown"; }
    else if (peer.failures > 0) {
      health = `failing${peer.failing_s !== null ? ` for ${peer.failing_s} s` : ""}` +
        `${peer.error ? `: ${peer.error}` : ""}`;
      kind = "failing";
    } else if (peer.last_seen_s === null) { health = "not heard yet"; kind = "unknown"; }
    else { health = "healthy"; kind = "ok"; }
    const holds = held && id && held.replica === id;
    const name = el("td", { class: "mono", title: id || "" , text: id ? short(id) : "(not yet known)" });
    if (holds) name.append(el("span", { class: "holder", text: "holds finality", title: "the final frontier waits for this member" }));
    return el("tr", { "data-testid": "member", "data-replica": id || "", "data-health": kind },
      name,
      el("td", { class: "mono", text: isSelf ? location.host : (peer ? peer.url : "") }),
      el("td", { text: isSelf ? "" : ago(peer ? peer.last_seen_s : null) }),
      el("td", { class: `health ${kind}`, text: health }));
  }

  // -- start -------------------------------------------------------------
  syncForm();
  showSignedIn(null);
  connect();
})();

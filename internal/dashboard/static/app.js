// muster's dashboard: follows masterd's event stream (/events) and draws the
// roll, the event log and the registry's services. Plain DOM, no framework;
// every value from the master is set as text, never parsed as HTML.

const HISTORY_MS = 4 * 60 * 1000; // the sparkline's longest span
const MIN_SPAN_MS = 20 * 1000; // and its shortest, while history is short
const MAX_EVENTS = 200;
const SYMBOL = { alive: "●", suspect: "▲", dead: "✖", left: "■", unknown: "?" };

const state = {
  offset: 0, // browser clock minus master clock, ms
  heartbeatMs: 1000,
  lastFrame: 0, // browser time of the last message
  events: [], // newest last
  cards: new Map(), // node name -> card
  counts: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

const masterNow = () => Date.now() - state.offset;

function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}

function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function age(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function bytes(n) {
  const gib = n / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`;
}

// ---- nodes

function makeCard(name) {
  const c = el("article", "node");
  c.dataset.node = name;
  const parts = {
    name: el("h3", "name", name),
    badge: el("span", "badge"),
    ident: el("p", "ident"),
    addr: el("span", "value mono"),
    inc: el("span", "value mono"),
    load: el("span", "value"),
    cpuBar: el("span"),
    cpuPct: el("span", "pct"),
    memBar: el("span"),
    memPct: el("span", "pct"),
    spark: svg("svg", { class: "spark", viewBox: "0 0 240 40", preserveAspectRatio: "none", role: "img" }),
    sparkLabel: el("span", "label", "CPU history"),
    beat: el("p", "beat"),
    age: el("span", "age"),
    since: el("span", "since"),
    statusVersion: 0,
  };
  const addr = el("span", null, "address ");
  addr.append(parts.addr);
  const inc = el("span", null, "incarnation ");
  inc.append(parts.inc);
  const load = el("span", null, "load ");
  load.append(parts.load);
  parts.ident.append(addr, inc, load);

  const cpuBar = el("div", "bar");
  cpuBar.append(parts.cpuBar);
  parts.cpuBarBox = cpuBar;
  const memBar = el("div", "bar");
  memBar.append(parts.memBar);
  parts.memBarBox = memBar;

  parts.beat.append("last heartbeat ", parts.age, " ago ", parts.since);
  const head = el("div", "head");
  head.append(parts.name, parts.badge);
  c.append(
    head, parts.ident,
    el("span", "label", "CPU"), cpuBar, parts.cpuPct,
    el("span", "label", "Memory"), memBar, parts.memPct,
    parts.sparkLabel, parts.spark,
    parts.beat,
  );
  c.parts = parts;
  return c;
}

function setStatus(card, status, since, version) {
  const p = card.parts;
  if (version < p.statusVersion) return; // an event already told us better
  p.statusVersion = version;
  card.dataset.status = status;
  p.badge.dataset.status = status;
  p.badge.textContent = `${SYMBOL[status] || ""} ${status.toUpperCase()}`;
  if (since) p.statusSince = since;
}

function setBar(bar, box, pctEl, pct, title) {
  if (pct === null) {
    bar.style.width = "0";
    pctEl.textContent = "–";
    box.title = "no report yet";
    return;
  }
  const v = Math.max(0, Math.min(100, pct));
  bar.style.width = `${v}%`;
  box.classList.toggle("high", v >= 90);
  pctEl.textContent = `${Math.round(v)}%`;
  box.title = title;
}

// drawSpark draws the CPU figures of the last 4 minutes, or of as long as
// there are figures for if that is shorter (but at least 20 s), so that a
// young history is not squeezed into a corner. label says which span.
function drawSpark(el, label, samples, now) {
  el.replaceChildren();
  const pts = samples.filter(([t]) => t >= now - HISTORY_MS);
  const span = pts.length ? Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, now - pts[0][0])) : HISTORY_MS;
  label.textContent = `CPU, last ${span >= 60000 ? `${Math.round(span / 60000)} min` : `${Math.round(span / 1000)} s`}`;
  el.setAttribute("aria-label", pts.length ? `CPU over the last ${age(span)}, ${pts.length} reports` : "no CPU figures yet");
  if (pts.length < 2) {
    const t = svg("text", { x: 4, y: 26, class: "none" });
    t.textContent = pts.length ? "one report so far" : "no reports yet";
    el.append(t);
    return;
  }
  const x = (t) => ((240 * (t - (now - span))) / span).toFixed(1);
  const y = (v) => (38 - (36 * Math.max(0, Math.min(100, v))) / 100).toFixed(1);
  const line = pts.map(([t, v]) => `${x(t)},${y(v)}`).join(" ");
  el.append(
    svg("polygon", { points: `${x(pts[0][0])},40 ${line} ${x(pts[pts.length - 1][0])},40`, class: "area" }),
    svg("polyline", { points: line }),
  );
}

function renderNodes(snap) {
  const box = $("nodes");
  const seen = new Set();
  const now = snap.now;
  for (const n of snap.nodes) {
    seen.add(n.name);
    let card = state.cards.get(n.name);
    if (!card) {
      card = makeCard(n.name);
      state.cards.set(n.name, card);
    }
    box.append(card); // in the roll's order, by name
    const p = card.parts;
    setStatus(card, n.status, n.statusSince, snap.version);
    p.addr.textContent = n.addr || "–";
    p.inc.textContent = n.incarnation;
    p.lastHeartbeat = n.lastHeartbeat;
    const r = n.report;
    if (r) {
      p.load.textContent = `${r.load1.toFixed(2)} · ${r.cpuCount} CPUs`;
      setBar(p.cpuBar, p.cpuBarBox, p.cpuPct, r.cpuPercent, `CPU ${r.cpuPercent.toFixed(1)}% of ${r.cpuCount} CPUs`);
      setBar(p.memBar, p.memBarBox, p.memPct, r.memUsedPercent,
        `memory ${r.memUsedPercent.toFixed(1)}% used: ${bytes(r.memTotal - r.memAvailable)} of ${bytes(r.memTotal)}`);
    } else {
      p.load.textContent = "–";
      setBar(p.cpuBar, p.cpuBarBox, p.cpuPct, null);
      setBar(p.memBar, p.memBarBox, p.memPct, null);
    }
    drawSpark(p.spark, p.sparkLabel, n.cpu, now);
  }
  for (const [name, card] of state.cards) {
    if (!seen.has(name)) {
      card.remove();
      state.cards.delete(name);
    }
  }
  $("no-nodes").hidden = snap.nodes.length > 0;
  renderSummary();
}

function renderSummary() {
  const counts = { alive: 0, suspect: 0, dead: 0, left: 0, unknown: 0 };
  for (const card of state.cards.values()) counts[card.dataset.status] = (counts[card.dataset.status] || 0) + 1;
  const s = $("summary");
  s.replaceChildren();
  const total = state.cards.size;
  s.append(`${total} node${total === 1 ? "" : "s"}: `);
  const parts = ["alive", "suspect", "dead", "left"].concat(counts.unknown ? ["unknown"] : []);
  parts.forEach((k, i) => {
    if (i) s.append(" · ");
    s.append(el("b", null, String(counts[k])), ` ${k}`);
  });
}

// ticks updates what changes with time alone: heartbeat ages, the link.
function tick() {
  const now = masterNow();
  for (const card of state.cards.values()) {
    const p = card.parts;
    const status = card.dataset.status;
    if (p.lastHeartbeat) {
      const a = now - p.lastHeartbeat;
      p.age.textContent = age(a);
      p.beat.classList.toggle("late", (status === "alive" || status === "suspect") && a > 1.5 * state.heartbeatMs);
    } else {
      p.age.textContent = "never";
    }
    p.since.textContent = p.statusSince ? `${status} since ${clock(p.statusSince + state.offset)}` : "";
  }
  const link = $("link");
  if (link.dataset.state === "live") {
    const quiet = Date.now() - state.lastFrame;
    $("link-text").textContent = quiet > 5000 ? `live, but no update for ${age(quiet)}` : "live";
  }
}

// ---- events

function renderEvents() {
  const list = $("events");
  list.replaceChildren();
  for (let i = state.events.length - 1; i >= 0; i--) {
    const e = state.events[i];
    const li = el("li");
    li.dataset.kind = e.kind;
    li.dataset.node = e.node;
    li.dataset.version = e.version;
    const at = el("span", "at", clock(e.at + state.offset));
    at.append(el("small", null, `.${pad(new Date(e.at).getMilliseconds(), 3)}`));
    const kind = el("span", "kind", e.kind);
    kind.dataset.kind = e.kind;
    li.append(at, kind, el("span", "node-name", e.node), el("span", "reason", e.reason || ""));
    li.title = `version ${e.version}, incarnation ${e.incarnation}, ${e.addr}`;
    list.append(li);
  }
  $("no-events").hidden = state.events.length > 0;
}

function applyEvents(v) {
  if (v.reset) state.events = [];
  for (const e of v.events) {
    state.events.push(e);
    const card = state.cards.get(e.node);
    if (card && e.kind !== "forgotten") setStatus(card, e.status, e.at, e.version);
  }
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  renderEvents();
  renderSummary();
}

// ---- services

function renderServices(sv, now) {
  const note = $("services-note");
  const body = document.querySelector("#services tbody");
  body.replaceChildren();
  if (!sv.at) {
    note.textContent = "asking the registry…";
  } else if (sv.error) {
    note.textContent = `the registry did not answer at ${clock(sv.at)}: ${sv.error}` + (sv.list && sv.list.length ? " (the list below is older)" : "");
  } else {
    note.textContent = sv.list.length ? `as the registry listed them at ${clock(sv.at)}` : "the registry lists no service";
  }
  for (const s of sv.list || []) {
    const tr = el("tr");
    tr.dataset.service = `${s.name}/${s.instance}`;
    const name = el("td");
    const key = el("span", "key");
    key.append(el("b", null, s.name), `/${s.instance}`);
    name.append(key, el("span", "owner", s.owner));
    // The lease as of now: the registry was asked up to 5 s ago.
    const left = Math.max(0, s.remainingMs - (now - sv.at));
    const lease = el("td", `lease state-${s.state}`, `${s.state}, ${age(left)} left`);
    tr.append(name, el("td", "mono", s.addr), lease);
    body.append(tr);
  }
  $("services").hidden = !(sv.list && sv.list.length);
}

// ---- the stream

function connect() {
  const link = $("link");
  const es = new EventSource("events");
  es.addEventListener("open", () => {
    // A restarted master may count versions from anywhere: trust its
    // first snapshot whatever our cards saw before.
    for (const card of state.cards.values()) card.parts.statusVersion = 0;
    link.dataset.state = "live";
    state.lastFrame = Date.now();
    $("link-text").textContent = "live";
  });
  es.addEventListener("error", () => {
    link.dataset.state = "lost";
    $("link-text").textContent = es.readyState === EventSource.CLOSED ? "disconnected: reload the page" : "connection lost: reconnecting…";
  });
  es.addEventListener("snapshot", (m) => {
    const snap = JSON.parse(m.data);
    state.lastFrame = Date.now();
    state.offset = Date.now() - snap.now;
    state.heartbeatMs = snap.heartbeatMs || 1000;
    $("cluster").textContent = snap.cluster;
    $("master").textContent = `master ${snap.master}`;
    $("interval").textContent = age(state.heartbeatMs);
    renderNodes(snap);
    renderServices(snap.services, snap.now);
    tick();
  });
  es.addEventListener("events", (m) => {
    state.lastFrame = Date.now();
    applyEvents(JSON.parse(m.data));
    tick();
  });
}

connect();
setInterval(tick, 200);

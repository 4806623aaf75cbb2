// muster's dashboard: follows masterd's event stream (/events) and draws the
// roll as a dense table, built for 10,000 nodes: problem nodes (dead,
// suspect, unknown) first, a filter by name or address and by status, a
// choice of sort, and at most ROW_CAP rows besides the problem ones drawn at
// once ("N more: refine the filter"). A click on a row opens the node's
// detail (api/node), refreshed every second while open. Plain DOM, no
// framework; every value from the master is set as text, never parsed as
// HTML.

const ROW_CAP = 300; // rows drawn besides the problem ones
const PROBLEM_CAP = 1000; // problem rows drawn at most
const HISTORY_MS = 4 * 60 * 1000; // the sparkline's longest span
const MIN_SPAN_MS = 20 * 1000; // and its shortest, while history is short
const MAX_EVENTS = 200;
const DETAIL_EVERY_MS = 1000;
const SYMBOL = { alive: "●", suspect: "▲", dead: "✖", left: "■", unknown: "?" };
// Problem nodes first: the order of the status sort.
const RANK = { dead: 0, suspect: 1, unknown: 2, alive: 3, left: 4 };
const PROBLEM = new Set(["dead", "suspect", "unknown"]);

const state = {
  offset: 0, // browser clock minus master clock, ms
  heartbeatMs: 1000,
  reportMs: 5000,
  startedAt: 0,
  lastFrame: 0, // browser time of the last message
  events: [], // newest last
  nodes: new Map(), // name -> {n: the snapshot's row, status, statusSince, statusVersion}
  rows: new Map(), // name -> <tr>, made when first drawn
  drawn: [], // names of the rows drawn, in order
  selected: "", // the node in the detail panel
  detail: null, // its last api/node reply
  detailAt: 0, // browser time it was asked
  detailBusy: false,
  pending: false, // a render is scheduled
  seen: false, // the first snapshot arrived
  // This master is not the leader: its roll is the replicated one, with no
  // resource figures and no heartbeat times, shown as "—".
  replicated: false,
};

// For tests and the curious: when the page first drew the roll
// (performance.now(), from the start of navigation), how long its renders
// take, and the last status changes it drew (browser clock).
const MAX_CHANGES = 200;
window.muster = { scriptAt: performance.now(), firstSnapshotAt: 0, firstRenderMs: 0, ready: 0, renders: 0, lastRenderMs: 0, changes: [] };

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

function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

const masterNow = () => Date.now() - state.offset;

function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}

function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function date(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function age(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function bytes(n) {
  if (n >= 2 ** 40) return `${(n / 2 ** 40).toFixed(1)} TiB`;
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${Math.round(n / 2 ** 20)} MiB`;
  return `${Math.round(n / 2 ** 10)} KiB`;
}

function rate(n) {
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB/s`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB/s`;
  return `${Math.round(n)} B/s`;
}

// current is whether a node's last report holds current figures: the
// cheap test the sort makes for every node; figures says why, in words.
function current(e, now) {
  const r = e.n.report;
  return !!r && e.status !== "dead" && e.status !== "left" && !(r.sampledAt && now - r.sampledAt > 2 * state.reportMs);
}

// figures says whether a node's last report is current: a dead or departed
// node has no current figures, and a report older than two report
// intervals is stale.
function figures(e, now) {
  const r = e.n.report;
  if (!r) return { state: "none", why: state.replicated ? "not known here: resource reports go to the leader only" : "no report yet" };
  const at = r.sampledAt ? ` (sampled ${clock(r.sampledAt + state.offset)}, ${age(now - r.sampledAt)} ago)` : "";
  if (e.status === "dead" || e.status === "left") {
    return { state: "stale", gone: true, why: `the node is ${e.status}: its last figures${at} are not current` };
  }
  if (r.sampledAt && now - r.sampledAt > 2 * state.reportMs) {
    return { state: "stale", why: `stale: the last report${at} is older than two report intervals (${age(2 * state.reportMs)})` };
  }
  return { state: "current", why: `last report${at}` };
}

// ---- the table

function makeRow(name) {
  const tr = el("tr", "node");
  tr.dataset.node = name;
  tr.tabIndex = 0;
  const c = {
    badge: el("span", "badge"),
    name: el("td", "name", name),
    addr: el("td", "mono addr"),
    cpu: el("td", "num"),
    mem: el("td", "num"),
    load: el("td", "num"),
    beat: el("td", "num"),
    report: el("td", "num"),
  };
  const st = el("td", "st");
  st.append(c.badge);
  tr.append(st, c.name, c.addr, c.cpu, c.mem, c.load, c.beat, c.report);
  tr.cells_ = c;
  return tr;
}

function percentCell(td, v, f) {
  td.classList.toggle("stale", f.state === "stale");
  td.classList.toggle("high", f.state === "current" && v >= 90);
  td.title = f.why;
  // A dead or departed node's figures are not shown in the table at all;
  // the detail panel shows them, marked.
  if (f.state === "none" || f.gone) return setText(td, state.replicated && f.state === "none" ? "—" : "–");
  setText(td, f.state === "stale" ? `(${Math.round(v)}%)` : `${Math.round(v)}%`);
}

function fillRow(tr, e, now) {
  const c = tr.cells_;
  const n = e.n;
  if (e.changed) { // a new status, drawn for the first time now
    e.changed = false;
    const ch = window.muster.changes;
    ch.push({ node: n.name, status: e.status, at: Date.now() });
    if (ch.length > MAX_CHANGES) ch.shift();
  }
  if (tr.dataset.status !== e.status) {
    tr.dataset.status = e.status;
    c.badge.dataset.status = e.status;
    c.badge.textContent = `${SYMBOL[e.status] || ""} ${e.status.toUpperCase()}`;
  }
  setText(c.addr, n.addr || "–");
  const f = figures(e, now);
  const r = n.report;
  percentCell(c.cpu, r ? r.cpuPercent : 0, f);
  percentCell(c.mem, r ? r.memUsedPercent : 0, f);
  c.load.classList.toggle("stale", f.state === "stale");
  setText(c.load, r && !f.gone ? r.load1.toFixed(2) : state.replicated ? "—" : "–");
  fillAges(tr, e, now, f);
  tr.classList.toggle("selected", state.selected === n.name);
  tr.setAttribute("aria-selected", state.selected === n.name ? "true" : "false");
}

function fillAges(tr, e, now, f) {
  const c = tr.cells_;
  const n = e.n;
  if (n.lastHeartbeat) {
    const a = now - n.lastHeartbeat;
    setText(c.beat, `${age(a)} ago`);
    c.beat.classList.toggle("late", (e.status === "alive" || e.status === "suspect") && a > 1.5 * state.heartbeatMs);
  } else {
    setText(c.beat, state.replicated ? "—" : "never");
    c.beat.classList.remove("late");
    c.beat.title = state.replicated ? "not known here: only the leader hears heartbeats" : "";
  }
  const r = n.report;
  if (r && r.sampledAt) {
    f = f || figures(e, now);
    setText(c.report, `${age(now - r.sampledAt)}${f.state === "stale" ? " stale" : ""}`);
    c.report.classList.toggle("stale", f.state === "stale");
    c.report.title = f.why;
  } else {
    setText(c.report, state.replicated ? "—" : "–");
  }
}

function matcher() {
  const words = $("filter").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const st = $("status").value;
  return (e) => {
    if (st === "problem" ? !PROBLEM.has(e.status) : st && e.status !== st) return false;
    if (!words.length) return true;
    const hay = `${e.n.name} ${e.n.addr}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  };
}

function comparator(now) {
  const key = $("sort").value;
  const pin = $("pin").checked;
  const byName = (a, b) => (a.n.name < b.n.name ? -1 : a.n.name > b.n.name ? 1 : 0);
  // Nodes without current figures sort after those with, whatever the order.
  const fig = (e, pick) => (e.current ? pick(e.n.report) : -1);
  const order = {
    status: (a, b) => RANK[a.status] - RANK[b.status] || byName(a, b),
    name: byName,
    cpu: (a, b) => fig(b, (r) => r.cpuPercent) - fig(a, (r) => r.cpuPercent) || byName(a, b),
    mem: (a, b) => fig(b, (r) => r.memUsedPercent) - fig(a, (r) => r.memUsedPercent) || byName(a, b),
    age: (a, b) => (a.n.lastHeartbeat || 0) - (b.n.lastHeartbeat || 0) || byName(a, b),
  }[key] || byName;
  if (!pin) return order;
  return (a, b) => (PROBLEM.has(b.status) - PROBLEM.has(a.status)) || order(a, b);
}

function schedule() {
  if (state.pending) return;
  state.pending = true;
  requestAnimationFrame(render);
}

function render() {
  state.pending = false;
  const t0 = performance.now();
  const now = masterNow();
  const match = matcher();
  const list = [];
  let problems = 0;
  for (const e of state.nodes.values()) {
    if (!match(e)) continue;
    e.current = current(e, now);
    list.push(e);
    if (PROBLEM.has(e.status)) problems++;
  }
  list.sort(comparator(now));
  const limit = ROW_CAP + ($("pin").checked ? Math.min(problems, PROBLEM_CAP) : 0);
  const shown = list.slice(0, limit);
  const names = shown.map((e) => e.n.name);
  for (const e of shown) {
    let tr = state.rows.get(e.n.name);
    if (!tr) {
      tr = makeRow(e.n.name);
      state.rows.set(e.n.name, tr);
    }
    fillRow(tr, e, now);
  }
  if (names.length !== state.drawn.length || names.some((n, i) => n !== state.drawn[i])) {
    document.querySelector("#nodes tbody").replaceChildren(...names.map((n) => state.rows.get(n)));
    state.drawn = names;
  }
  // Rows not drawn are dropped once there are many, so memory stays bounded.
  if (state.rows.size > 4 * (ROW_CAP + PROBLEM_CAP)) {
    const keep = new Set(names);
    for (const n of state.rows.keys()) if (!keep.has(n)) state.rows.delete(n);
  }
  const total = state.nodes.size;
  const more = $("more");
  more.hidden = list.length <= shown.length;
  more.textContent = more.hidden ? "" : `${list.length - shown.length} more match: refine the filter to see them`;
  $("shown").textContent = total ? `showing ${shown.length} of ${list.length} matching, ${total} in all` : "";
  $("no-nodes").hidden = !state.seen || total > 0;
  renderSummary();
  renderDetail(now);
  window.muster.renders++;
  window.muster.lastRenderMs = performance.now() - t0;
}

// ages updates what changes with time alone, in the rows drawn only.
function ages() {
  const now = masterNow();
  for (const name of state.drawn) {
    const e = state.nodes.get(name);
    const tr = state.rows.get(name);
    if (e && tr) fillAges(tr, e, now);
  }
}

function renderSummary() {
  const counts = { alive: 0, suspect: 0, dead: 0, left: 0, unknown: 0 };
  for (const e of state.nodes.values()) counts[e.status] = (counts[e.status] || 0) + 1;
  const s = $("summary");
  if (!state.seen) return;
  const total = state.nodes.size;
  const text = `${total}|${Object.values(counts).join(",")}|${$("status").value}`;
  if (s.dataset.text === text) return;
  s.dataset.text = text;
  s.replaceChildren();
  s.append(`${total} node${total === 1 ? "" : "s"}: `);
  const parts = ["alive", "suspect", "dead", "left"].concat(counts.unknown ? ["unknown"] : []);
  parts.forEach((k, i) => {
    if (i) s.append(" · ");
    const b = el("button", `count count-${k}`);
    b.type = "button";
    b.dataset.status = k;
    b.title = `show only ${k} nodes`;
    b.setAttribute("aria-pressed", $("status").value === k ? "true" : "false");
    b.append(el("b", null, String(counts[k])), ` ${k}`);
    s.append(b);
  });
}

// ---- the detail panel

function select(name) {
  state.selected = name;
  state.detail = null;
  state.detailAt = 0;
  $("detail").hidden = !name;
  schedule();
  if (name) fetchDetail();
}

async function fetchDetail() {
  if (!state.selected || state.detailBusy) return;
  const name = state.selected;
  state.detailBusy = true;
  state.detailAt = Date.now();
  try {
    const resp = await fetch(`api/node?name=${encodeURIComponent(name)}`);
    if (name !== state.selected) return;
    if (!resp.ok) {
      state.detail = { error: (await resp.text()).trim() };
    } else {
      state.detail = await resp.json();
    }
  } catch (err) {
    state.detail = { error: `the master did not answer: ${err}` };
  } finally {
    state.detailBusy = false;
  }
  renderDetail(masterNow());
}

function fact(dl, term, value, cls) {
  const dt = el("dt", null, term);
  const dd = el("dd", cls, value);
  dl.append(dt, dd);
  return dd;
}

function renderDetail(now) {
  const name = state.selected;
  if (!name) return;
  const e = state.nodes.get(name);
  const d = state.detail;
  setText($("d-name"), name);
  const badge = $("d-badge");
  const status = e ? e.status : d && d.status;
  if (status) {
    badge.dataset.status = status;
    setText(badge, `${SYMBOL[status] || ""} ${status.toUpperCase()}`);
  }
  const facts = $("d-facts");
  const figs = $("d-figures");
  const disks = document.querySelector("#d-disks tbody");
  facts.replaceChildren();
  figs.replaceChildren();
  disks.replaceChildren();
  $("d-spark").replaceChildren();
  if (!d) {
    setText($("d-note"), "asking the master…");
    setText($("d-figures-note"), "");
    $("d-disks").hidden = true;
    return;
  }
  if (d.error) {
    setText($("d-note"), d.error);
    setText($("d-figures-note"), "");
    $("d-disks").hidden = true;
    return;
  }
  setText($("d-note"), `as the master knew it ${age(Date.now() - state.detailAt)} ago`);
  const st = e ? e.status : d.status;
  const since = e ? e.statusSince : d.statusSince;
  fact(facts, "Status", since ? `${st} since ${clock(since + state.offset)} (${age(now - since)})` : st);
  fact(facts, "Address", d.addr || "–", "mono");
  fact(facts, "Incarnation", d.incarnation, "mono");
  fact(facts, "Joined", d.joinedAt ? `${date(d.joinedAt + state.offset)} (${age(now - d.joinedAt)} ago)` : "–");
  fact(facts, "Last heartbeat", d.lastHeartbeat ? `${age(now - d.lastHeartbeat)} ago`
    : state.replicated ? "— (not known here: only the leader hears heartbeats)" : "never since the master started");
  if (d.certNotAfter) {
    const left = d.certNotAfter - now;
    const dd = fact(facts, "Certificate expires", `${date(d.certNotAfter + state.offset)} (${left > 0 ? `in ${age(left)}` : `${age(-left)} ago: expired`})`);
    dd.classList.toggle("warn", left < 7 * 86400 * 1000);
  } else {
    fact(facts, "Certificate expires", "not known (restored from the roster, not seen since)");
  }

  const view = { n: d, status: st };
  const f = figures(view, now);
  const r = d.report;
  const full = d.full;
  setText($("d-figures-note"), f.state === "current" ? `Figures of the ${f.why}` : f.why);
  figs.classList.toggle("stale", f.state === "stale");
  $("d-disks").classList.toggle("stale", f.state === "stale");
  if (!r || !full) {
    $("d-disks").hidden = true;
    return;
  }
  fact(figs, "CPU", `${r.cpuPercent.toFixed(1)}% of ${r.cpuCount} CPU${r.cpuCount === 1 ? "" : "s"}${full.cpuModel ? `, ${full.cpuModel}` : ""}`);
  fact(figs, "Load", `${r.load1.toFixed(2)} · ${full.load5.toFixed(2)} · ${full.load15.toFixed(2)}`);
  fact(figs, "Memory", `${r.memUsedPercent.toFixed(1)}% used: ${bytes(full.memTotal - full.memAvailable)} of ${bytes(full.memTotal)}`);
  fact(figs, "Swap", full.swapTotal ? `${bytes(full.swapTotal - full.swapFree)} used of ${bytes(full.swapTotal)}` : "none");
  fact(figs, "Network", `${rate(full.netRxBytesPerSec)} in · ${rate(full.netTxBytesPerSec)} out`);
  fact(figs, "Uptime", full.uptimeMs ? age(full.uptimeMs) : "–");
  fact(figs, "Processes", String(full.procs));
  for (const k of full.disks || []) {
    const tr = el("tr");
    tr.append(el("td", "mono", k.mount), el("td", "num", `${k.usedPercent.toFixed(0)}%`), el("td", "num", `${bytes(k.free)} of ${bytes(k.total)}`));
    tr.children[1].classList.toggle("high", k.usedPercent >= 90);
    disks.append(tr);
  }
  $("d-disks").hidden = !(full.disks && full.disks.length);
  drawSpark($("d-spark"), d.cpu || [], d.now);
}

// drawSpark draws the CPU figures of the last 4 minutes, or of as long as
// there are figures for if that is shorter (but at least 20 s).
function drawSpark(box, samples, now) {
  const pts = samples.filter(([t]) => t >= now - HISTORY_MS);
  const span = pts.length ? Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, now - pts[0][0])) : HISTORY_MS;
  box.setAttribute("aria-label", pts.length ? `CPU over the last ${age(span)}, ${pts.length} reports` : "no CPU figures yet");
  if (pts.length < 2) {
    const t = svg("text", { x: 4, y: 26, class: "none" });
    t.textContent = pts.length ? "CPU history: one report so far" : state.replicated ? "CPU history: kept by the leader only" : "CPU history: no reports yet";
    box.append(t);
    return;
  }
  const x = (t) => ((240 * (t - (now - span))) / span).toFixed(1);
  const y = (v) => (38 - (36 * Math.max(0, Math.min(100, v))) / 100).toFixed(1);
  const line = pts.map(([t, v]) => `${x(t)},${y(v)}`).join(" ");
  box.append(
    svg("polygon", { points: `${x(pts[0][0])},40 ${line} ${x(pts[pts.length - 1][0])},40`, class: "area" }),
    svg("polyline", { points: line }),
  );
}

// ---- events

function renderEvents() {
  const list = $("events");
  const items = [];
  for (let i = state.events.length - 1; i >= 0; i--) {
    const e = state.events[i];
    const li = el("li");
    li.dataset.kind = e.kind;
    li.dataset.node = e.node;
    li.dataset.version = e.version;
    li.dataset.at = e.at;
    const at = el("span", "at", clock(e.at + state.offset));
    at.append(el("small", null, `.${pad(new Date(e.at).getMilliseconds(), 3)}`));
    const kind = el("span", "kind", e.kind);
    kind.dataset.kind = e.kind;
    li.append(at, kind, el("span", "node-name", e.node), el("span", "reason", e.reason || ""));
    li.title = `version ${e.version}, incarnation ${e.incarnation}, ${e.addr}`;
    items.push(li);
  }
  list.replaceChildren(...items);
  $("no-events").hidden = state.events.length > 0;
}

function applyEvents(v) {
  if (v.reset) state.events = [];
  for (const ev of v.events) {
    state.events.push(ev);
    let e = state.nodes.get(ev.node);
    if (ev.kind === "forgotten") {
      state.nodes.delete(ev.node);
      continue;
    }
    if (!e && state.seen) {
      // A node the last snapshot did not have: shown until the next one fills it in.
      e = { n: { name: ev.node, addr: ev.addr, status: ev.status, incarnation: ev.incarnation, statusSince: ev.at, lastHeartbeat: 0, report: null }, statusVersion: 0 };
      state.nodes.set(ev.node, e);
    }
    if (e && ev.version >= e.statusVersion) {
      if (e.status && e.status !== ev.status) e.changed = true;
      e.status = ev.status;
      e.statusSince = ev.at;
      e.statusVersion = ev.version;
      if (ev.incarnation) e.n.incarnation = ev.incarnation;
    }
  }
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  renderEvents();
  schedule();
}

// ---- services

function renderServices(sv, now) {
  const note = $("services-note");
  const body = document.querySelector("#services tbody");
  body.replaceChildren();
  if (!sv.at) {
    note.textContent = "asking the registry…";
    $("services").hidden = true;
    return;
  }
  if (sv.error) {
    note.textContent = `the registry did not answer at ${clock(sv.at + state.offset)}: ${sv.error}` +
      (sv.list && sv.list.length ? ` (the list below is from ${clock(sv.listedAt + state.offset)}; its leases are not current)` : "");
  } else {
    note.textContent = sv.list.length ? `as the registry listed them at ${clock(sv.at + state.offset)}` : "the registry lists no service";
  }
  for (const s of sv.list || []) {
    const tr = el("tr");
    tr.dataset.service = `${s.name}/${s.instance}`;
    const name = el("td");
    const key = el("span", "key");
    key.append(el("b", null, s.name), `/${s.instance}`);
    name.append(key, el("span", "owner", s.owner));
    // The lease as of now: the registry was asked up to 5 s ago.
    const left = Math.max(0, s.remainingMs - (now - (sv.listedAt || sv.at)));
    // Once the countdown is over the list is older than the lease: say
    // what it was then, not that it has 0 s left.
    const listed = clock((sv.listedAt || sv.at) + state.offset);
    const text = sv.error || left <= 0 ? `${s.state} at ${listed}, ${age(s.ttlMs)} lease` : `${s.state}, ${age(left)} left`;
    const lease = el("td", `lease state-${s.state}`, text);
    lease.classList.toggle("stale", !!sv.error || left <= 0);
    tr.append(name, el("td", "mono", s.addr), lease);
    body.append(tr);
  }
  $("services").hidden = !(sv.list && sv.list.length);
}

// ---- the masters

const ROLE = { leader: "LEADER", follower: "follower", candidate: "candidate", shutdown: "shut down" };

function renderMasters(g, now) {
  g = g || { servers: [] };
  setText($("masters-term"), g.term ? `term ${g.term}` : "");
  const fol = $("follower");
  const leader = g.servers.find((m) => m.leader);
  if (g.state && g.state !== "leader") {
    fol.hidden = false;
    const who = g.leader ? `${g.leader} (${(leader && leader.addr) || "address not announced yet"})` : "not known: an election is under way";
    const heard = g.lastContact ? `; last heard from it ${age(now - g.lastContact)} ago` : "";
    setText(fol, `this master is a ${g.state}; the leader is ${who}: the roll shown is the replicated one, without resource figures${heard}`);
  } else {
    fol.hidden = true;
    setText(fol, "");
  }
  const note = $("masters-note");
  note.hidden = g.servers.length > 0;
  setText(note, g.servers.length ? "" : "the group's configuration is not known yet");
  const rows = [];
  for (const m of g.servers) {
    const tr = el("tr");
    tr.dataset.master = m.name;
    tr.dataset.leader = m.leader ? "1" : "0";
    const name = el("td", "name", `${m.leader ? "★ " : ""}${m.name}`);
    if (m.self) name.append(" ", el("span", "self", "(this master)"));
    let role;
    if (m.self) role = ROLE[g.state] || g.state;
    else if (m.leader) role = ROLE.leader;
    else role = m.voter ? "follower" : "non-voter";
    if (!m.voter && role !== "non-voter") role += ", non-voter";
    const st = el("td", m.leader ? "role-leader" : "", role);
    // Only the leader knows whether the others answer.
    if (m.failingSince) {
      st.className = "failing";
      st.textContent = `${role}: not answering since ${clock(m.failingSince + state.offset)} (${age(now - m.failingSince)})`;
    }
    tr.append(name, el("td", "mono", m.addr || "—"), el("td", "mono", m.raftAddr || "—"), st);
    rows.push(tr);
  }
  document.querySelector("#masters tbody").replaceChildren(...rows);
  $("masters").hidden = !g.servers.length;
}

// ---- the stream

function applySnapshot(snap) {
  if (!window.muster.firstSnapshotAt) window.muster.firstSnapshotAt = performance.now();
  state.lastFrame = Date.now();
  state.offset = Date.now() - snap.now;
  state.heartbeatMs = snap.heartbeatMs || 1000;
  state.reportMs = snap.reportMs || 5000;
  state.startedAt = snap.startedAt;
  state.replicated = !!(snap.group && snap.group.state && snap.group.state !== "leader");
  setText($("cluster"), snap.cluster);
  setText($("master"), `master ${snap.master}`);
  setText($("build"), snap.build || "");
  setText($("interval"), age(state.heartbeatMs));
  setText($("report"), age(state.reportMs));
  const next = new Map();
  for (const n of snap.nodes) {
    const e = state.nodes.get(n.name) || { statusVersion: 0 };
    e.n = n;
    // An event newer than this snapshot already told us better.
    if (snap.version >= e.statusVersion) {
      if (e.status && e.status !== n.status) e.changed = true;
      e.status = n.status;
      e.statusSince = n.statusSince;
      e.statusVersion = snap.version;
    }
    next.set(n.name, e);
  }
  state.nodes = next;
  state.seen = true;
  renderServices(snap.services, snap.now);
  renderMasters(snap.group, snap.now);
  render();
  if (!window.muster.ready) {
    window.muster.ready = performance.now();
    window.muster.firstRenderMs = window.muster.lastRenderMs;
    document.body.dataset.ready = "1";
  }
  tick();
}

function connect() {
  const link = $("link");
  const es = new EventSource("events");
  es.addEventListener("open", () => {
    // A restarted master may count versions from anywhere: trust its
    // first snapshot whatever we saw before.
    for (const e of state.nodes.values()) e.statusVersion = 0;
    link.dataset.state = "live";
    state.lastFrame = Date.now();
    $("link-text").textContent = "live";
  });
  es.addEventListener("error", () => {
    link.dataset.state = "lost";
    $("link-text").textContent = es.readyState === EventSource.CLOSED ? "disconnected: reload the page" : "connection lost: reconnecting…";
  });
  es.addEventListener("snapshot", (m) => applySnapshot(JSON.parse(m.data)));
  es.addEventListener("events", (m) => {
    state.lastFrame = Date.now();
    applyEvents(JSON.parse(m.data));
  });
}

// tick updates what changes with time alone: ages, the master's uptime,
// the link, and the open detail panel.
function tick() {
  ages();
  if (state.startedAt) setText($("uptime"), age(masterNow() - state.startedAt));
  const link = $("link");
  if (link.dataset.state === "live") {
    const quiet = Date.now() - state.lastFrame;
    setText($("link-text"), quiet > 5000 ? `live, but no update for ${age(quiet)}` : "live");
  }
  if (state.selected && Date.now() - state.detailAt >= DETAIL_EVERY_MS) fetchDetail();
}

function wire() {
  for (const id of ["filter", "status", "sort", "pin"]) $(id).addEventListener("input", schedule);
  $("controls").addEventListener("submit", (ev) => ev.preventDefault());
  $("summary").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-status]");
    if (!b) return;
    const st = $("status");
    st.value = st.value === b.dataset.status ? "" : b.dataset.status;
    schedule();
  });
  const body = document.querySelector("#nodes tbody");
  body.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr[data-node]");
    if (tr) select(tr.dataset.node === state.selected ? "" : tr.dataset.node);
  });
  body.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr[data-node]");
    if (tr && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      select(tr.dataset.node);
    }
  });
  $("d-close").addEventListener("click", () => select(""));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.selected) select("");
    if (ev.key === "/" && document.activeElement !== $("filter")) {
      ev.preventDefault();
      $("filter").focus();
    }
  });
}

wire();
connect();
setInterval(tick, 1000);

// The live call table: rows keyed by record id, newest first by default, sortable by any column, filtered by
// words, key:value terms and comparisons on the time split (duration>1s, queue>100ms, server>=2s, transit<5ms).
import { $, el, clear, fmtUS, fmtTime, firstTime, svc, zoneName } from "./util.js";

const MAX_ROWS = 500;    // rows kept in the live table
const MAX_PAUSED = 2000; // rows buffered while paused

const rows = new Map();  // id → tr, in arrival order (the first is the oldest)
let paused = false, pausedBuf = [], terms = [];
let sortCol = "time", sortDir = "desc";
let onChange = () => {};

const tbody = () => $("calls").tBodies[0];
const transitUS = (r) => (r.replied && r.reply_delivered ? Math.max(0, (new Date(r.reply_delivered) - new Date(r.replied)) * 1000) : 0);

// Column keys: what each header sorts by.
const COLS = {
  time: (r) => new Date(firstTime(r) || 0).getTime() || 0,
  kind: (r) => r.kind || "",
  caller: (r) => svc(r.caller),
  callee: (r) => svc(r.callee) || r.topic || "",
  dest: (r) => (r.topic || r.routing_key || r.exchange || "") + (r.server ? "." + r.server : ""),
  method: (r) => r.method || r.event_type || "",
  duration: (r) => (r.kind === "call" ? r.duration_us || 0 : -1),
  queue: (r) => r.queue_us || 0,
  server: (r) => r.server_us || 0,
  status: (r) => r.status || "",
  request: (r) => r.request_id || r.global_request_id || "",
};

function cmp(a, b) {
  const f = COLS[sortCol] || COLS.time;
  const x = f(a._rec), y = f(b._rec);
  let c = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
  if (c === 0) c = a._rec.id - b._rec.id;
  return sortDir === "asc" ? c : -c;
}

export function initTable(o) {
  onChange = o.onChange || onChange;
  for (const th of $("calls").tHead.rows[0].cells) {
    if (!th.dataset.col) continue;
    th.classList.add("sortable");
    th.addEventListener("click", () => {
      const col = th.dataset.col;
      setSort(col, sortCol === col && sortDir === "desc" ? "asc" : "desc");
      onChange();
    });
  }
  $("filter").addEventListener("input", () => { applyFilter(); onChange(); });
  $("pause").addEventListener("click", () => {
    paused = !paused;
    if (!paused) { const buf = pausedBuf; pausedBuf = []; addRows(buf, false); }
    updatePauseButton();
  });
  updateHeader();
  updateCount();
}

export function sortState() { return { col: sortCol, dir: sortDir }; }
export function filterText() { return $("filter").value; }

export function setSort(col, dir) {
  if (!COLS[col]) col = "time";
  sortCol = col;
  sortDir = dir === "asc" ? "asc" : "desc";
  const list = [...tbody().rows].sort(cmp);
  const frag = document.createDocumentFragment();
  for (const tr of list) frag.appendChild(tr);
  tbody().appendChild(frag);
  updateHeader();
}

function updateHeader() {
  for (const th of $("calls").tHead.rows[0].cells) {
    if (!th.dataset.col) continue;
    const on = th.dataset.col === sortCol;
    th.setAttribute("aria-sort", on ? (sortDir === "asc" ? "ascending" : "descending") : "none");
    th.classList.toggle("sorted", on);
  }
  const t = $("calls").tHead.querySelector('th[data-col="time"] .zone');
  if (t) t.textContent = " (" + zoneName() + ")";
}

function cellEP(ep) {
  const td = el("td");
  if (!ep) { td.textContent = "–"; return td; }
  td.appendChild(document.createTextNode(svc(ep)));
  if (ep.host) td.appendChild(el("span", "host", ep.host));
  td.title = (ep.connection || "") + (ep.pid ? "  pid " + ep.pid : "");
  return td;
}

function makeRow(r) {
  const tr = el("tr");
  tr.dataset.id = String(r.id);
  tr.dataset.kind = r.kind;
  tr.dataset.status = r.status;
  const t = el("td", "mono", fmtTime(firstTime(r)));
  t.dataset.col = "time";
  tr.appendChild(t);
  const k = el("td"); k.appendChild(el("span", "badge k-" + r.kind, r.kind)); tr.appendChild(k);
  tr.appendChild(cellEP(r.caller));
  const calleeTd = cellEP(r.callee);
  if (r.callees && r.callees.length > 1) calleeTd.appendChild(el("span", "host", "+" + (r.callees.length - 1)));
  tr.appendChild(calleeTd);
  let dest = r.topic || r.routing_key || r.exchange || "";
  if (r.server) dest += " · " + r.server;
  const dt = el("td", "", dest);
  dt.title = dest;
  tr.appendChild(dt);
  const m = el("td", "mono", r.kind === "notification" ? (r.event_type || r.method || "") : (r.method || ""));
  m.title = m.textContent;
  tr.appendChild(m);
  const dur = el("td", "num mono", r.kind === "call" ? fmtUS(r.duration_us) : "–");
  if (r.duration_us > 1e6) dur.classList.add("slow");
  tr.appendChild(dur);
  tr.appendChild(el("td", "num mono", fmtUS(r.queue_us)));
  tr.appendChild(el("td", "num mono", fmtUS(r.server_us)));
  const st = el("td");
  const b = el("span", "badge s-" + r.status, r.status);
  if (r.error && r.error.class) b.title = r.error.class + ": " + (r.error.message || "");
  st.appendChild(b);
  if (r.error && r.error.class) st.appendChild(el("span", "host", r.error.class));
  tr.appendChild(st);
  const rq = el("td", "mono");
  const rid = r.request_id || r.global_request_id;
  if (rid) {
    const a = el("span", "link", rid.length > 13 ? rid.slice(0, 13) + "…" : rid);
    a.title = rid;
    a.dataset.req = rid;
    rq.appendChild(a);
  } else rq.textContent = "–";
  tr.appendChild(rq);
  tr._rec = r;
  tr._search = [r.kind, r.status, r.method, r.topic, r.server, r.exchange, r.routing_key, r.event_type,
    r.request_id, r.global_request_id, r.msg_id, r.caller && r.caller.service, r.caller && r.caller.host,
    r.callee && r.callee.service, r.callee && r.callee.host, r.error && r.error.class].filter(Boolean).join(" ").toLowerCase();
  return tr;
}

// retime re-renders the time column in the page's (new) time zone.
export function retime() {
  for (const tr of tbody().rows) tr.cells[0].textContent = fmtTime(firstTime(tr._rec));
  updateHeader();
}

export function addRows(list, flash) {
  if (!list || !list.length) return;
  if (paused) {
    for (const r of list) pausedBuf.push(r);
    if (pausedBuf.length > MAX_PAUSED) pausedBuf.splice(0, pausedBuf.length - MAX_PAUSED);
    updatePauseButton();
    return;
  }
  const body = tbody();
  // list is oldest first. Rows past MAX_ROWS would be removed again at once: do not build them.
  const fresh = [];
  for (let i = Math.max(0, list.length - MAX_ROWS); i < list.length; i++) {
    const r = list[i];
    if (rows.has(r.id)) continue; // snapshots and deltas can overlap by a tick: keyed by id
    const tr = makeRow(r);
    if (flash) tr.classList.add("new");
    filterRow(tr);
    rows.set(r.id, tr);
    fresh.push(tr);
  }
  if (sortCol === "time" && sortDir === "desc") {
    const frag = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i--) frag.appendChild(fresh[i]);
    body.insertBefore(frag, body.firstChild);
  } else {
    for (const tr of fresh) {
      let at = null;
      for (const o of body.rows) if (cmp(tr, o) < 0) { at = o; break; }
      body.insertBefore(tr, at);
    }
  }
  while (rows.size > MAX_ROWS) {
    const [id, tr] = rows.entries().next().value;
    rows.delete(id);
    tr.remove();
  }
  updateCount();
}

export function resetRows() {
  clear(tbody());
  rows.clear();
  pausedBuf = [];
  updatePauseButton();
  updateCount();
}

// ---------- filter ----------
const UNIT = { us: 1, "µs": 1, ms: 1e3, s: 1e6, m: 6e7 };
const NUM = /^(duration|dur|queue|server|transit)(>=|<=|>|<|=)(\d+(?:\.\d+)?)(us|µs|ms|s|m)?$/;

export function parseFilter(text) {
  const out = [];
  for (const tok of text.trim().split(/\s+/)) {
    if (!tok) continue;
    const n = NUM.exec(tok.toLowerCase());
    if (n) { out.push({ key: n[1] === "dur" ? "duration" : n[1], op: n[2], us: Number(n[3]) * UNIT[n[4] || "ms"] }); continue; }
    const low = tok.toLowerCase();
    const i = low.indexOf(":");
    if (i > 0 && !low.startsWith("req-")) out.push({ key: low.slice(0, i), val: low.slice(i + 1) });
    else out.push({ key: "", val: low });
  }
  return out;
}

function numOf(r, key) {
  switch (key) {
    case "duration": return r.kind === "call" ? r.duration_us || 0 : 0;
    case "queue": return r.queue_us || 0;
    case "server": return r.server_us || 0;
    case "transit": return transitUS(r);
  }
  return 0;
}

function matches(tr, list) {
  const r = tr._rec;
  const is = (ep, v) => !!ep && ((ep.service || "").toLowerCase() === v || ((ep.service || "") + "@" + (ep.host || "")).toLowerCase() === v);
  for (const t of list) {
    let ok;
    if (t.op) {
      const x = numOf(r, t.key);
      ok = t.op === ">" ? x > t.us : t.op === ">=" ? x >= t.us : t.op === "<" ? x < t.us && x > 0 : t.op === "<=" ? x <= t.us && x > 0 : x === t.us;
    } else {
      const v = t.val;
      switch (t.key) {
        case "service": ok = is(r.caller, v) || is(r.callee, v) || (r.callees || []).some((c) => is(c, v)); break;
        case "from": ok = is(r.caller, v); break;
        case "to": ok = is(r.callee, v) || ("topic:" + (r.topic || r.exchange || "")).toLowerCase() === v ||
          (r.callees || []).some((c) => is(c, v)); break;
        case "method": ok = (r.method || "").toLowerCase().includes(v) || (r.event_type || "").toLowerCase().includes(v); break;
        case "kind": ok = r.kind === v; break;
        case "status": ok = r.status === v; break;
        case "topic": ok = (r.topic || "").toLowerCase() === v; break;
        case "req": case "request": ok = (r.request_id || "").toLowerCase() === v || (r.global_request_id || "").toLowerCase() === v; break;
        case "host": ok = (r.caller && r.caller.host === v) || (r.callee && r.callee.host === v); break;
        default: ok = tr._search.includes(t.key ? t.key + ":" + v : v);
      }
    }
    if (!ok) return false;
  }
  return true;
}

function filterRow(tr) { tr.classList.toggle("hidden", !matches(tr, terms)); }

function applyFilter() {
  terms = parseFilter($("filter").value);
  for (const tr of tbody().rows) filterRow(tr);
  updateCount();
}

export function setFilter(text) {
  if ($("filter").value === text) return;
  $("filter").value = text;
  applyFilter();
}

function updateCount() {
  const body = tbody();
  let shown = 0;
  for (const tr of body.rows) if (!tr.classList.contains("hidden")) shown++;
  $("rowcount").textContent = terms.length ? shown + " of " + body.rows.length + " shown" : body.rows.length + " calls";
}

function updatePauseButton() {
  const b = $("pause");
  b.classList.toggle("active", paused);
  b.textContent = paused ? "Resume (" + pausedBuf.length + " new)" : "Pause";
}

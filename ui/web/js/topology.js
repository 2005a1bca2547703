// The topology view (#/topology[?q=TEXT]): what the wire showed of the broker's routing (api/topology): every
// vhost's queues with their flags, arguments, consumers and prefetch, exchanges with their flags, and bindings;
// each queue's wire depth and oldest age come from api/inflight. Reply queues and per-call exchanges are counted
// per service, not listed. The view polls while it is open. Every name is wire data: text only.
import { $, el, clear, fmtMS, fmtCount } from "./util.js";
import { getJSON } from "./api.js";

const POLL_MS = 3000;
let gen = 0;        // bumped by show and hide: a poll loop of an older generation stops
let filter = "";
let last = null;    // the last views, redrawn when the filter changes
let onFilterChange = () => {};

export function initTopology({ onFilter }) {
  onFilterChange = onFilter || onFilterChange;
  $("topofilter").addEventListener("input", () => {
    filter = $("topofilter").value;
    if (last) render(last.topo, last.inflight);
    onFilterChange(filter);
  });
}

export function filterText() { return filter; }

// show opens the view with a filter and starts polling; hide stops the polling.
export function show(q) {
  filter = q || "";
  if ($("topofilter").value !== filter) $("topofilter").value = filter;
  const g = ++gen;
  poll(g);
}

export function hide() { gen++; }

async function poll(g) {
  let topo, inflight = null;
  try {
    [topo, inflight] = await Promise.all([getJSON("api/topology"), getJSON("api/inflight?limit=0").catch(() => null)]);
  } catch (e) {
    if (g !== gen) return;
    $("topostatus").textContent = "topology not available: " + e.message;
    setTimeout(() => { if (g === gen) poll(g); }, POLL_MS);
    return;
  }
  if (g !== gen) return;
  last = { topo, inflight };
  render(topo, inflight);
  setTimeout(() => { if (g === gen) poll(g); }, POLL_MS);
}

// matches says whether any of a row's texts holds the filter (case-insensitive).
function matches(...texts) {
  const f = filter.trim().toLowerCase();
  if (!f) return true;
  return texts.some((t) => t && String(t).toLowerCase().includes(f));
}

// fmtDur is a declared duration (TTL, expiry) in its natural unit.
function fmtDur(ms) {
  if (!(ms > 0)) return "";
  const units = [[3600000, "h"], [60000, "min"], [1000, "s"]];
  for (const [n, u] of units) if (ms >= n) return +(ms / n).toFixed(ms % n ? 1 : 0) + " " + u;
  return ms + " ms";
}

// who is a consuming process as the cell shows it (service@host) and as its tooltip does (with the pid).
function who(ep, pid) {
  let s = ep.service || "?";
  if (ep.host) s += "@" + ep.host;
  if (pid && ep.pid) s += " pid " + ep.pid;
  return s;
}

function flagCell(names) {
  const td = el("td", "flags");
  for (const n of names) td.appendChild(el("span", "badge fl-" + n.replace(/[^a-z]/g, ""), n));
  return td;
}

function table(cls, heads) {
  const t = el("table", "topo " + cls);
  const tr = el("tr");
  for (const h of heads) tr.appendChild(el("th", h.num ? "num" : "", h.t || h));
  t.createTHead().appendChild(tr);
  t.createTBody();
  return t;
}

function td(text, cls) {
  const c = el("td", cls || "", text === undefined || text === null || text === "" ? "–" : text);
  if (text) c.title = String(text);
  return c;
}

function counted(shown, n) { return shown === n ? String(n) : shown + " of " + n; }

// section adds a titled table; one the filter left empty shows its title only.
function section(parent, title, count, t) {
  const s = el("section", "toposec");
  const h = el("h3", "", title + " ");
  h.appendChild(el("span", "hint", count));
  s.appendChild(h);
  if (t.tBodies[0].rows.length) s.appendChild(t);
  parent.appendChild(s);
}

function queueFlags(q) {
  if (!q.declared) return ["not declared here"];
  const f = [];
  f.push(q.durable ? "durable" : "transient");
  if (q.auto_delete) f.push("auto-delete");
  if (q.exclusive) f.push("exclusive");
  return f;
}

function queueArgs(q) {
  const a = [];
  if (q.max_length) a.push("max-length " + q.max_length);
  if (q.ha_policy) a.push("ha-policy " + q.ha_policy);
  if (q.dead_letter_exchange) a.push("dead-letter " + q.dead_letter_exchange);
  return a.join(", ");
}

function render(topo, inflight) {
  const body = $("topobody");
  clear(body);
  const depth = new Map();
  for (const q of (inflight && inflight.queues) || []) depth.set(q.queue, q);
  const vhosts = topo.vhosts || [];
  let shown = 0, total = 0;
  for (const v of vhosts) {
    const box = el("div", "vhost");
    box.dataset.vhost = v.vhost;
    box.appendChild(el("h2", "", "vhost " + (v.vhost || "(not named: a capture that missed the login)")));

    // What needs a look first: queues holding messages (deepest first), then queues nobody consumes here.
    const qs = (v.queues || []).slice().sort((a, b) => {
      const da = depth.get(a.name), db = depth.get(b.name);
      return ((db ? db.depth : 0) - (da ? da.depth : 0)) || ((a.consumers ? 1 : 0) - (b.consumers ? 1 : 0)) ||
        (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    });
    const qt = table("queues", ["queue", "type", "flags", { t: "consumers", num: true }, { t: "wire depth", num: true },
      { t: "oldest", num: true }, "consumed by (prefetch)", { t: "message TTL", num: true }, { t: "expires", num: true },
      "arguments", "declared by"]);
    let qshown = 0;
    for (const q of qs) {
      const consumer = (c, pid) => who(c, pid) + (c.consumers > 1 ? " ×" + c.consumers : "") +
        " (" + (c.prefetch ? c.prefetch : "unlimited") + ")";
      const consumers = (q.consumed_by || []).map((c) => consumer(c, false));
      const consumersLong = (q.consumed_by || []).map((c) => consumer(c, true));
      total++;
      if (!matches(q.name, q.declared_by, q.queue_type, ...consumersLong)) continue;
      shown++;
      qshown++;
      const tr = el("tr");
      tr.dataset.queue = q.name;
      tr.appendChild(td(q.name, "mono"));
      tr.appendChild(td(q.queue_type || (q.declared ? "default" : "")));
      tr.appendChild(flagCell(queueFlags(q)));
      const n = td(String(q.consumers), "num cons");
      if (q.consumers === 0) n.classList.add("none");
      tr.appendChild(n);
      // A queue nobody consumes that holds messages is marked: they wait for a consumer that has gone.
      const d = depth.get(q.name);
      const dc = td(d ? fmtCount(d.depth) : "", "num depth");
      const ac = td(d ? fmtMS(d.oldest_age_ms) : "", "num age");
      if (d) { dc.dataset.n = String(d.depth); ac.dataset.ms = String(d.oldest_age_ms); }
      if (d && q.consumers === 0) { dc.classList.add("stuck"); ac.classList.add("stuck"); }
      tr.appendChild(dc);
      tr.appendChild(ac);
      const wc = td(consumers.join(", "), "who");
      if (consumersLong.length) wc.title = "consumed by (prefetch):\n" + consumersLong.join("\n");
      tr.appendChild(wc);
      tr.appendChild(td(fmtDur(q.message_ttl_ms), "num"));
      tr.appendChild(td(fmtDur(q.expires_ms), "num"));
      tr.appendChild(td(queueArgs(q)));
      tr.appendChild(td(q.declared_by));
      qt.tBodies[0].appendChild(tr);
    }
    section(box, "Queues", counted(qshown, qs.length), qt);

    const xs = v.exchanges || [];
    const bound = new Map();
    for (const b of v.bindings || []) bound.set(b.exchange, (bound.get(b.exchange) || 0) + 1);
    const xt = table("exchanges", ["exchange", "type", "flags", "declared by", { t: "bindings", num: true }]);
    let xshown = 0;
    for (const x of xs) {
      total++;
      if (!matches(x.name, x.type, x.declared_by)) continue;
      shown++;
      xshown++;
      const tr = el("tr");
      tr.dataset.exchange = x.name;
      tr.appendChild(td(x.name || "(default)", "mono"));
      tr.appendChild(td(x.type));
      const f = !x.declared ? ["passive only"] : [x.durable ? "durable" : "transient"];
      if (x.declared && x.auto_delete) f.push("auto-delete");
      if (x.internal) f.push("internal");
      tr.appendChild(flagCell(f));
      tr.appendChild(td(x.declared_by));
      tr.appendChild(td(String(bound.get(x.name) || 0), "num"));
      xt.tBodies[0].appendChild(tr);
    }
    section(box, "Exchanges", counted(xshown, xs.length), xt);

    const bs = v.bindings || [];
    const bt = table("bindings", ["exchange", "binding key", "queue"]);
    let bshown = 0;
    for (const b of bs) {
      total++;
      if (!matches(b.exchange, b.key, b.queue)) continue;
      shown++;
      bshown++;
      const tr = el("tr");
      tr.appendChild(td(b.exchange || "(default)", "mono"));
      tr.appendChild(td(b.key, "mono"));
      tr.appendChild(td(b.queue, "mono"));
      bt.tBodies[0].appendChild(tr);
    }
    section(box, "Bindings", counted(bshown, bs.length), bt);

    const ps = v.private || [];
    const pt = table("private", ["service", { t: "reply queues", num: true }, { t: "reply / per-call exchanges", num: true },
      { t: "their consumers", num: true }, { t: "their bindings", num: true }]);
    let pshown = 0;
    for (const p of ps) {
      total++;
      if (!matches(p.service)) continue;
      shown++;
      pshown++;
      const tr = el("tr");
      tr.dataset.service = p.service;
      tr.appendChild(td(p.service || "(unknown)"));
      tr.appendChild(td(String(p.queues), "num"));
      tr.appendChild(td(String(p.exchanges), "num"));
      tr.appendChild(td(String(p.consumers), "num"));
      tr.appendChild(td(String(p.bindings), "num"));
      pt.tBodies[0].appendChild(tr);
    }
    section(box, "Reply queues and per-call exchanges, by service", counted(pshown, ps.length), pt);
    body.appendChild(box);
  }
  if (!vhosts.length) body.appendChild(el("div", "empty", "Nothing declared or consumed through amqptrace yet."));
  let status = filter.trim() ? shown + " of " + total + " rows match" : "";
  if (topo.omitted) status += (status ? " · " : "") + topo.omitted + " left out past the view's bounds";
  $("topostatus").textContent = status;
  body.dataset.at = topo.at || "";
}

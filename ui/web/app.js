// amqptrace live UI. Plain JS, no build step, no third-party code.
//
// Safety rule for this file: every string that came from the wire (service names, methods, args, errors...) is
// inserted with textContent, createTextNode or setAttribute on a non-URL attribute. Nothing here uses innerHTML,
// outerHTML, insertAdjacentHTML or document.write. The server's Content-Security-Policy backs this up.
"use strict";

(function () {
  const SVGNS = "http://www.w3.org/2000/svg";
  const MAX_ROWS = 500;        // rows kept in the live table
  const MAX_PAUSED = 2000;     // rows buffered while paused
  const $ = (id) => document.getElementById(id);

  // ---------- DOM helpers (text only) ----------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  // ---------- formatting ----------
  function fmtUS(us) {
    if (us === null || us === undefined || us <= 0) return "–";
    if (us < 1000) return us + " µs";
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + " ms";
    return (us / 1e6).toFixed(2) + " s";
  }
  function fmtRate(r) {
    if (!r) return "0";
    if (r >= 100) return r.toFixed(0);
    if (r >= 10) return r.toFixed(1);
    return r.toFixed(2);
  }
  function fmtCount(n) {
    if (n === undefined || n === null) return "–";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(n);
  }
  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (isNaN(d)) return "–";
    const p = (n, w) => String(n).padStart(w || 2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
  }
  function firstTime(r) { return r.published || r.delivered || r.replied || r.reply_delivered; }
  function svc(ep) { return ep ? (ep.service || "?") : ""; }

  // ---------- state ----------
  const state = {
    seq: -1, graph: null, rows: new Map(), paused: false, pausedBuf: [], filter: [], jaeger: false,
    selNode: null,
  };
  window.__amqptrace = state; // for debugging from the console and for the browser tests

  // ---------- headline counters ----------
  function setCtr(id, text, cls, bad) {
    $(id).textContent = text;
    if (cls) $(cls).classList.toggle("bad", !!bad);
  }
  function renderHeadline(h) {
    if (!h) return;
    setCtr("c-conns", fmtCount(h.connections_open || 0));
    setCtr("c-calls", fmtRate(h.calls_per_sec || 0));
    setCtr("c-casts", fmtRate(h.casts_per_sec || 0));
    setCtr("c-errors", fmtCount(h.errors_window || 0), "ctr-errors", (h.errors_window || 0) > 0);
    setCtr("c-timeouts", fmtCount(h.timeouts_window || 0), "ctr-timeouts", (h.timeouts_window || 0) > 0);
    const dropped = (h.records_dropped || 0) + (h.ui_dropped || 0);
    setCtr("c-dropped", fmtCount(dropped), "ctr-dropped", dropped > 0);
    setCtr("c-spans", fmtCount(h.spans_dropped || 0), "ctr-spans", (h.spans_dropped || 0) > 0);
    $("ctr-dropped").title = "records dropped before the UI: " + (h.records_dropped || 0) +
      "\nrecords dropped by the UI: " + (h.ui_dropped || 0) + "\nspans dropped: " + (h.spans_dropped || 0);
  }

  // ---------- graph ----------
  // Layout: columns by role (api → conductor → scheduler → compute/agents → sinks), nodes sorted by id within a
  // column. Deterministic, so the picture does not move between updates unless the set of nodes changes.
  const COLS = ["api", "conductor / server", "scheduler", "compute / agents", "topics / listeners"];
  const graphEls = { nodes: new Map(), edges: new Map(), layerEdges: null, layerNodes: null, layerPulses: null, labels: null };
  let positions = new Map();

  function initGraph() {
    const g = $("graph");
    const defs = sv("defs");
    for (const [name, color] of [["ok", "#6e8fb0"], ["slow", "#d29922"], ["err", "#f85149"], ["fanout", "#bc8cff"], ["notif", "#39c5cf"]]) {
      const m = sv("marker", { id: "arrow-" + name, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" });
      m.appendChild(sv("path", { d: "M0,0 L10,5 L0,10 z", fill: color }));
      defs.appendChild(m);
    }
    g.appendChild(defs);
    graphEls.labels = sv("g");
    graphEls.layerEdges = sv("g");
    graphEls.layerPulses = sv("g");
    graphEls.layerNodes = sv("g");
    g.append(graphEls.labels, graphEls.layerEdges, graphEls.layerPulses, graphEls.layerNodes);
    window.addEventListener("resize", () => { if (state.graph) renderGraph(state.graph, false); });
  }

  function nodeWidth(n) { return Math.min(230, Math.max(96, 16 + 7 * (n.label || n.id).length)); }

  function layout(nodes, W, H) {
    const cols = new Map();
    for (const n of nodes) {
      const l = Math.max(0, Math.min(4, n.layer | 0));
      if (!cols.has(l)) cols.set(l, []);
      cols.get(l).push(n);
    }
    const used = [...cols.keys()].sort((a, b) => a - b);
    const pos = new Map();
    const colX = new Map();
    const padX = 30, top = 34, bottom = 16;
    used.forEach((l, i) => {
      const x = used.length === 1 ? W / 2 : padX + 110 + i * ((W - 2 * padX - 220) / (used.length - 1));
      colX.set(l, x);
      const list = cols.get(l).slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const step = (H - top - bottom) / list.length;
      list.forEach((n, j) => pos.set(n.id, { x: x, y: top + step * (j + 0.5), w: nodeWidth(n), h: 34, layer: l }));
    });
    return { pos, colX };
  }

  function edgeColor(e) {
    if (e.errors + e.timeouts + e.unroutable > 0 && e.error_ratio >= 0.01) return ["#f85149", "err"];
    if (e.type === "fanout") return ["#bc8cff", "fanout"];
    if (e.type === "notification") return ["#39c5cf", "notif"];
    if (e.p99_us > 1e6) return ["#d29922", "slow"];
    return ["#6e8fb0", "ok"];
  }

  function edgePath(a, b, e, idx) {
    // From the right side of a to the left side of b when b is to the right; otherwise a curve around.
    if (a === b) {
      const x = a.x + a.w / 2, y = a.y;
      return `M${x},${y - 6} C${x + 50},${y - 40} ${x + 50},${y + 40} ${x},${y + 6}`;
    }
    const bend = (idx % 3) * 10;
    if (b.x > a.x + 1) {
      const x1 = a.x + a.w / 2, y1 = a.y, x2 = b.x - b.w / 2, y2 = b.y;
      const dx = Math.max(40, (x2 - x1) / 2);
      return `M${x1},${y1 + bend / 3} C${x1 + dx},${y1 + bend} ${x2 - dx},${y2 + bend} ${x2},${y2}`;
    }
    if (b.x < a.x - 1) {
      // Backwards flow (agents reporting to a server): leave from the left, arrive on the right, bowed down.
      const x1 = a.x - a.w / 2, y1 = a.y, x2 = b.x + b.w / 2, y2 = b.y;
      const dx = Math.max(40, (x1 - x2) / 2);
      return `M${x1},${y1} C${x1 - dx},${y1 + 30 + bend} ${x2 + dx},${y2 + 30 + bend} ${x2},${y2 + 6}`;
    }
    // Same column: an arc on the right.
    const x = a.x + a.w / 2, off = 40 + Math.abs(b.y - a.y) / 4;
    return `M${x},${a.y} C${x + off},${a.y} ${x + off},${b.y} ${b.x + b.w / 2},${b.y}`;
  }

  function renderGraph(g, pulse) {
    const svgEl = $("graph");
    const W = Math.max(600, svgEl.clientWidth), H = Math.max(220, svgEl.clientHeight);
    svgEl.setAttribute("viewBox", `0 0 ${W} ${H}`);
    $("graphempty").hidden = g.nodes.length > 0;
    const lay = layout(g.nodes, W, H);
    positions = lay.pos;

    clear(graphEls.labels);
    for (const [l, x] of lay.colX) {
      const t = sv("text", { x: x, y: 16, "text-anchor": "middle", class: "collabel" });
      t.textContent = COLS[l];
      graphEls.labels.appendChild(t);
    }

    // Edges: update in place, keyed by id, so pulses and hover survive updates.
    const seenE = new Set();
    g.edges.forEach((e, i) => {
      seenE.add(e.id);
      let ge = graphEls.edges.get(e.id);
      if (!ge) {
        ge = { g: sv("g", { class: "edge" }), line: sv("path", { class: "line" }), hit: sv("path", { class: "hit" }), label: sv("text", { "text-anchor": "middle" }) };
        ge.g.setAttribute("data-edge", e.id);
        ge.g.setAttribute("data-from", e.from);
        ge.g.setAttribute("data-to", e.to);
        ge.g.append(ge.line, ge.hit, ge.label);
        ge.g.addEventListener("mousemove", (ev) => showTip(ev, edgeTip(ge.data)));
        ge.g.addEventListener("mouseleave", hideTip);
        ge.g.addEventListener("click", () => setFilter(`from:${ge.data.from} to:${ge.data.to}`));
        graphEls.layerEdges.appendChild(ge.g);
        graphEls.edges.set(e.id, ge);
      }
      ge.data = e;
      const a = positions.get(e.from), b = positions.get(e.to);
      if (!a || !b) return;
      const d = edgePath(a, b, e, i);
      const [color, mk] = edgeColor(e);
      const width = 1.5 + Math.min(9, Math.log2(1 + e.rate) * 1.6);
      ge.line.setAttribute("d", d);
      ge.hit.setAttribute("d", d);
      ge.line.setAttribute("stroke", color);
      ge.line.setAttribute("stroke-width", width.toFixed(1));
      ge.line.setAttribute("marker-end", `url(#arrow-${mk})`);
      ge.line.setAttribute("stroke-dasharray", e.type === "fanout" ? "8 5" : e.type === "notification" ? "2 5" : "none");
      ge.g.setAttribute("data-type", e.type);
      ge.g.classList.toggle("idle", e.rate === 0);
      // Label at the curve's middle: rate, and p99 for calls.
      const len = ge.line.getTotalLength();
      const mid = ge.line.getPointAtLength(len / 2);
      ge.label.setAttribute("x", mid.x.toFixed(1));
      ge.label.setAttribute("y", (mid.y - 5).toFixed(1));
      let txt = fmtRate(e.rate) + "/s";
      if (e.p99_us > 0) txt += " · p99 " + fmtUS(e.p99_us);
      if (e.errors + e.timeouts > 0) txt += " · ✗" + (e.errors + e.timeouts);
      ge.label.textContent = txt;
      if (pulse && e.new > 0) for (let k = 0; k < Math.min(e.new, 3); k++) addPulse(ge.line, len, k * 140, color);
    });
    for (const [id, ge] of graphEls.edges) if (!seenE.has(id)) { ge.g.remove(); graphEls.edges.delete(id); }

    const seenN = new Set();
    for (const n of g.nodes) {
      seenN.add(n.id);
      let gn = graphEls.nodes.get(n.id);
      if (!gn) {
        gn = { g: sv("g", { class: "node" }), rect: sv("rect", { rx: "5", ry: "5" }), text: sv("text", { "text-anchor": "middle" }), sub: sv("text", { "text-anchor": "middle", class: "sub" }) };
        gn.g.setAttribute("data-node", n.id);
        gn.g.append(gn.rect, gn.text, gn.sub);
        gn.g.addEventListener("mousemove", (ev) => showTip(ev, nodeTip(gn.data)));
        gn.g.addEventListener("mouseleave", hideTip);
        gn.g.addEventListener("click", () => setFilter(gn.data.kind === "service" ? "service:" + gn.data.service : gn.data.label));
        graphEls.layerNodes.appendChild(gn.g);
        graphEls.nodes.set(n.id, gn);
      }
      gn.data = n;
      const p = positions.get(n.id);
      gn.g.setAttribute("class", "node " + n.kind + (n.errors > 0 ? " err" : ""));
      gn.rect.setAttribute("x", (p.x - p.w / 2).toFixed(1));
      gn.rect.setAttribute("y", (p.y - p.h / 2).toFixed(1));
      gn.rect.setAttribute("width", p.w);
      gn.rect.setAttribute("height", p.h);
      gn.text.setAttribute("x", p.x.toFixed(1));
      gn.text.setAttribute("y", (p.y - 2).toFixed(1));
      gn.text.textContent = n.label || n.id;
      gn.sub.setAttribute("x", p.x.toFixed(1));
      gn.sub.setAttribute("y", (p.y + 11).toFixed(1));
      gn.sub.textContent = "in " + fmtRate(n.in_rate) + "/s · out " + fmtRate(n.out_rate) + "/s";
    }
    for (const [id, gn] of graphEls.nodes) if (!seenN.has(id)) { gn.g.remove(); graphEls.nodes.delete(id); }
  }

  // Pulses: small dots that run along an edge when records flowed on it since the last update.
  const pulses = [];
  let pulseRAF = 0;
  function addPulse(path, len, delay, color) {
    if (pulses.length > 200) return;
    const c = sv("circle", { r: "3.2", class: "pulse", fill: color });
    c.setAttribute("cx", "-10");
    graphEls.layerPulses.appendChild(c);
    pulses.push({ c, path, len, t0: performance.now() + delay, dur: 650 });
    if (!pulseRAF) pulseRAF = requestAnimationFrame(stepPulses);
  }
  function stepPulses(now) {
    for (let i = pulses.length - 1; i >= 0; i--) {
      const p = pulses[i];
      const t = (now - p.t0) / p.dur;
      if (t < 0) continue;
      if (t >= 1 || !p.path.isConnected) { p.c.remove(); pulses.splice(i, 1); continue; }
      const pt = p.path.getPointAtLength(p.len * t);
      p.c.setAttribute("cx", pt.x.toFixed(1));
      p.c.setAttribute("cy", pt.y.toFixed(1));
    }
    pulseRAF = pulses.length ? requestAnimationFrame(stepPulses) : 0;
  }

  function showTip(ev, lines) {
    const tip = $("tooltip");
    clear(tip);
    lines.forEach((l, i) => tip.appendChild(el("div", i === 0 ? "t" : "", l)));
    tip.hidden = false;
    const r = $("graphwrap").getBoundingClientRect();
    tip.style.left = Math.min(ev.clientX - r.left + 14, r.width - 370) + "px";
    tip.style.top = (ev.clientY - r.top + 14) + "px";
  }
  function hideTip() { $("tooltip").hidden = true; }
  function edgeTip(e) {
    const out = [e.from + " → " + e.to + "  (" + e.type + ")",
      "rate " + fmtRate(e.rate) + "/s  (calls " + fmtRate(e.call_rate) + "/s, casts " + fmtRate(e.cast_rate) + "/s)",
      "60 s: " + e.calls + " calls, " + e.casts + " casts, " + e.fanouts + " fanouts, " + e.notifications + " notifications"];
    if (e.p50_us > 0) out.push("latency p50 " + fmtUS(e.p50_us) + " · p99 " + fmtUS(e.p99_us));
    out.push("errors " + e.errors + " · timeouts " + e.timeouts + " · unroutable " + e.unroutable);
    if (e.methods && e.methods.length) out.push("methods: " + e.methods.join(", "));
    return out;
  }
  function nodeTip(n) {
    const out = [n.label || n.id];
    if (n.kind === "topic") out.push("destination with no consumer behind the proxy");
    out.push("in " + fmtRate(n.in_rate) + "/s · out " + fmtRate(n.out_rate) + "/s");
    if (n.errors) out.push("errors + timeouts (60 s): " + n.errors);
    out.push("click to filter calls");
    return out;
  }

  // ---------- live call table ----------
  const tbody = () => $("calls").tBodies[0];

  function rowSearch(r) {
    const parts = [r.kind, r.status, r.method, r.topic, r.server, r.exchange, r.routing_key, r.event_type,
      r.request_id, r.global_request_id, r.msg_id, r.caller && r.caller.service, r.caller && r.caller.host,
      r.callee && r.callee.service, r.callee && r.callee.host, r.error && r.error.class];
    return parts.filter(Boolean).join(" ").toLowerCase();
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
    tr.appendChild(el("td", "mono", fmtTime(firstTime(r))));
    const k = el("td"); k.appendChild(el("span", "badge k-" + r.kind, r.kind)); tr.appendChild(k);
    tr.appendChild(cellEP(r.caller));
    let callee = r.callee;
    const calleeTd = cellEP(callee);
    if (r.callees && r.callees.length > 1) calleeTd.appendChild(el("span", "host", "+" + (r.callees.length - 1)));
    tr.appendChild(calleeTd);
    let dest = r.topic || r.routing_key || r.exchange || "";
    if (r.server) dest += " · " + r.server;
    tr.appendChild(el("td", "", dest));
    tr.appendChild(el("td", "mono", r.kind === "notification" ? (r.event_type || r.method || "") : (r.method || "")));
    const dur = el("td", "num mono", r.kind === "call" ? fmtUS(r.duration_us) : "–");
    if (r.duration_us > 1e6) dur.classList.add("slow");
    tr.appendChild(dur);
    tr.appendChild(el("td", "num mono", fmtUS(r.queue_us)));
    const st = el("td");
    const b = el("span", "badge s-" + r.status, r.status);
    if (r.error && r.error.class) b.title = r.error.class + ": " + (r.error.message || "");
    st.appendChild(b);
    if (r.error && r.error.class) st.appendChild(el("span", "host", r.error.class));
    tr.appendChild(st);
    const rq = el("td", "mono");
    const rid = r.request_id || r.global_request_id;
    if (rid) {
      const a = el("span", "link", rid.length > 16 ? rid.slice(0, 16) + "…" : rid);
      a.title = rid;
      a.dataset.req = rid;
      rq.appendChild(a);
    } else rq.textContent = "–";
    tr.appendChild(rq);
    tr._search = rowSearch(r);
    tr._rec = r;
    return tr;
  }

  function addRows(list, flash) {
    if (!list || !list.length) return;
    if (state.paused) {
      for (const r of list) state.pausedBuf.push(r);
      if (state.pausedBuf.length > MAX_PAUSED) state.pausedBuf.splice(0, state.pausedBuf.length - MAX_PAUSED);
      updatePauseButton();
      return;
    }
    const body = tbody();
    const frag = document.createDocumentFragment();
    // list is oldest first; the table shows newest on top. Rows past MAX_ROWS would be removed again at once:
    // do not build them.
    for (let i = list.length - 1; i >= Math.max(0, list.length - MAX_ROWS); i--) {
      const r = list[i];
      if (state.rows.has(r.id)) continue; // snapshots and deltas can overlap by a tick: keyed by id
      const tr = makeRow(r);
      if (flash) tr.classList.add("new");
      applyFilterRow(tr);
      state.rows.set(r.id, tr);
      frag.appendChild(tr);
    }
    body.insertBefore(frag, body.firstChild);
    while (body.rows.length > MAX_ROWS) {
      const last = body.rows[body.rows.length - 1];
      state.rows.delete(Number(last.dataset.id));
      last.remove();
    }
    updateCount();
  }

  function resetRows() {
    clear(tbody());
    state.rows.clear();
    state.pausedBuf = [];
    updatePauseButton();
    updateCount();
  }

  function parseFilter(text) {
    const terms = [];
    for (const tok of text.trim().toLowerCase().split(/\s+/)) {
      if (!tok) continue;
      const i = tok.indexOf(":");
      if (i > 0 && !tok.startsWith("req-")) terms.push({ key: tok.slice(0, i), val: tok.slice(i + 1) });
      else terms.push({ key: "", val: tok });
    }
    return terms;
  }
  function matches(tr, terms) {
    const r = tr._rec;
    for (const t of terms) {
      const v = t.val;
      let ok;
      switch (t.key) {
        case "service": ok = svc(r.caller).toLowerCase() === v || svc(r.callee).toLowerCase() === v ||
          (r.callees || []).some((c) => (c.service || "").toLowerCase() === v); break;
        case "from": ok = svc(r.caller).toLowerCase() === v || (r.caller && (r.caller.service + "@" + r.caller.host).toLowerCase() === v); break;
        case "to": ok = svc(r.callee).toLowerCase() === v || (r.callee && (r.callee.service + "@" + r.callee.host).toLowerCase() === v) ||
          ("topic:" + (r.topic || r.exchange || "")).toLowerCase() === v || (r.callees || []).some((c) => (c.service || "").toLowerCase() === v); break;
        case "method": ok = (r.method || "").toLowerCase().includes(v) || (r.event_type || "").toLowerCase().includes(v); break;
        case "kind": ok = r.kind === v; break;
        case "status": ok = r.status === v; break;
        case "topic": ok = (r.topic || "").toLowerCase() === v; break;
        case "req": case "request": ok = (r.request_id || "").toLowerCase() === v || (r.global_request_id || "").toLowerCase() === v; break;
        case "host": ok = (r.caller && r.caller.host === v) || (r.callee && r.callee.host === v); break;
        default: ok = tr._search.includes(t.key ? t.key + ":" + v : v);
      }
      if (!ok) return false;
    }
    return true;
  }
  function applyFilterRow(tr) { tr.classList.toggle("hidden", !matches(tr, state.filter)); }
  function applyFilter() {
    state.filter = parseFilter($("filter").value);
    for (const tr of tbody().rows) applyFilterRow(tr);
    updateCount();
  }
  function setFilter(text) { $("filter").value = text; applyFilter(); }
  function updateCount() {
    const body = tbody();
    let shown = 0;
    for (const tr of body.rows) if (!tr.classList.contains("hidden")) shown++;
    $("rowcount").textContent = state.filter.length ? shown + " of " + body.rows.length + " shown" : body.rows.length + " calls";
  }
  function updatePauseButton() {
    const b = $("pause");
    b.classList.toggle("active", state.paused);
    b.textContent = state.paused ? "Resume (" + state.pausedBuf.length + " new)" : "Pause";
  }

  // ---------- side panel: call detail, request waterfall ----------
  async function getJSON(url) {
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(res.status + " " + (await res.text()).trim());
    return res.json();
  }
  function openPanel(title) {
    $("paneltitle").textContent = title;
    clear($("panelbody"));
    $("panel").hidden = false;
    return $("panelbody");
  }
  function kv(pairs) {
    const dl = el("dl", "kv");
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === "") continue;
      dl.appendChild(el("dt", "", k));
      const dd = el("dd");
      if (v instanceof Node) dd.appendChild(v); else dd.textContent = String(v);
      dl.appendChild(dd);
    }
    return dl;
  }
  function epText(ep) {
    if (!ep) return null;
    return [ep.service, ep.pid ? "pid " + ep.pid : "", ep.host, ep.user ? "user " + ep.user : "", ep.vhost ? "vhost " + ep.vhost : ""].filter(Boolean).join(" · ") +
      (ep.connection ? "\n" + ep.connection : "");
  }
  function reqLink(id) {
    if (!id) return null;
    const a = el("span", "link", id);
    a.dataset.req = id;
    return a;
  }
  function pretty(raw) {
    if (raw === undefined || raw === null) return null;
    try { return JSON.stringify(raw, null, 2); } catch (e) { return String(raw); }
  }

  async function showCall(id) {
    const body = openPanel("Call " + id);
    let r;
    try { r = await getJSON("api/calls/" + encodeURIComponent(id)); } catch (e) { body.appendChild(el("div", "errbox", "Cannot load call: " + e.message)); return; }
    $("paneltitle").textContent = (r.kind || "") + " " + (r.method || r.event_type || "") + " — " + (r.status || "");
    body.dataset.call = String(r.id);
    const acts = el("div", "actions");
    const rid = r.request_id || r.global_request_id;
    if (rid) { const b = el("button", "", "Request waterfall"); b.type = "button"; b.addEventListener("click", () => showRequest(rid)); acts.appendChild(b); }
    if (r.trace_url && /^https?:\/\//i.test(r.trace_url)) {
      const a = el("a", "", "Open trace in Jaeger ↗");
      a.setAttribute("href", r.trace_url);
      a.setAttribute("target", "_blank");
      a.setAttribute("rel", "noopener noreferrer");
      a.id = "jaegerlink";
      acts.appendChild(a);
    }
    body.appendChild(acts);

    if (r.error) {
      body.appendChild(el("h3", "", "Remote exception"));
      const box = el("div", "errbox");
      box.appendChild(el("div", "cls", (r.error.module ? r.error.module + "." : "") + (r.error.class || "")));
      if (r.error.message) box.appendChild(el("pre", "", r.error.message));
      body.appendChild(box);
    }
    if (r.status === "timeout") {
      body.appendChild(el("h3", "", "Timeout"));
      body.appendChild(kv([["timeout", r.timeout_ms ? r.timeout_ms + " ms" : ""],
        ["ever delivered", r.ever_delivered === undefined ? "unknown" : String(r.ever_delivered)],
        ["late reply", r.late_reply ? "yes (reply arrived after the deadline)" : "no"]]));
    }
    if (r.status === "unroutable") body.appendChild(kv([["returned", (r.return_code || "") + " " + (r.return_text || "")]]));

    body.appendChild(el("h3", "", "RPC"));
    body.appendChild(kv([["kind", r.kind], ["status", r.status], ["method", r.method], ["event type", r.event_type],
      ["publisher id", r.publisher_id], ["priority", r.priority], ["topic", r.topic], ["server", r.server],
      ["exchange", r.exchange === "" ? "(default)" : r.exchange], ["routing key", r.routing_key], ["queue", r.queue],
      ["namespace", r.namespace], ["version", r.version], ["protocol", r.protocol], ["msg id", r.msg_id],
      ["unique id", r.unique_id], ["message id", r.message_id], ["request id", reqLink(r.request_id)],
      ["global request id", reqLink(r.global_request_id)], ["parent", r.parent_id],
      ["caller", epText(r.caller)], ["callee", epText(r.callee)],
      ["consumers", r.callees && r.callees.length > 1 ? r.callees.map((c) => c.service + (c.host ? "@" + c.host : "")).join(", ") : ""],
      ["deliveries", r.deliveries], ["request bytes", r.request_bytes], ["reply bytes", r.reply_bytes],
      ["truncated", r.truncated ? "yes" : ""]]));

    body.appendChild(el("h3", "", "Timestamps"));
    const t0 = r.published ? new Date(r.published).getTime() : null;
    const rel = (iso) => {
      if (!iso) return null;
      const full = iso;
      if (t0 === null) return full;
      const d = new Date(iso).getTime() - t0;
      return full + "   (+" + d.toFixed(0) + " ms)";
    };
    body.appendChild(kv([["published", rel(r.published)], ["confirmed", rel(r.confirmed)], ["delivered", rel(r.delivered)],
      ["replied", rel(r.replied)], ["reply delivered", rel(r.reply_delivered)], ["deadline", rel(r.deadline)],
      ["heartbeats", r.heartbeats || ""], ["duration", fmtUS(r.duration_us)], ["queue wait", fmtUS(r.queue_us)],
      ["server time", fmtUS(r.server_us)]]));

    if (r.args !== undefined) { body.appendChild(el("h3", "", "Args (redacted)")); const p = el("pre", "", pretty(r.args)); p.id = "detail-args"; body.appendChild(p); }
    if (r.result !== undefined) { body.appendChild(el("h3", "", "Result (redacted)")); body.appendChild(el("pre", "", pretty(r.result))); }
  }

  function ms(a, b) { return (new Date(b).getTime() - new Date(a).getTime()); }

  async function showRequest(id) {
    id = String(id).trim();
    if (!id) return;
    const body = openPanel("Request " + id);
    let resp;
    try { resp = await getJSON("api/request/" + encodeURIComponent(id)); } catch (e) { body.appendChild(el("div", "errbox", "Cannot load request: " + e.message)); return; }
    const calls = resp.calls || [];
    body.dataset.request = id;
    if (!calls.length) { body.appendChild(el("div", "hint", "No RPC with this request id in the recent records.")); return; }
    // Time axis: from the first publish to the last observed moment of any RPC.
    let start = Infinity, end = -Infinity;
    const times = (r) => [r.published, r.delivered, r.replied, r.reply_delivered, r.status === "timeout" ? r.deadline : null].filter(Boolean).map((t) => new Date(t).getTime());
    for (const r of calls) for (const t of times(r)) { start = Math.min(start, t); end = Math.max(end, t); }
    const span = Math.max(1, end - start);
    body.appendChild(el("div", "hint", calls.length + " RPCs · " + span.toFixed(0) + " ms from first publish to last reply"));
    const lg = el("div", "wf-legend");
    lg.append(el("span", "lq", "queue wait"), el("span", "ls", "server time"), el("span", "lt", "reply transit"), el("span", "lx", "timed out"));
    body.appendChild(lg);
    const wf = el("div", "wf");
    const axis = el("div", "wf-axis");
    axis.append(el("span", "", "0 ms"), el("span", "", (span / 2).toFixed(0) + " ms"), el("span", "", span.toFixed(0) + " ms"));
    wf.appendChild(axis);
    const pct = (t) => ((new Date(t).getTime() - start) / span) * 100;
    for (const r of calls) {
      const row = el("div", "wf-row" + (r.status !== "ok" ? " error" : ""));
      row.dataset.id = String(r.id);
      const label = el("div", "wf-label");
      label.append(el("span", "p", svc(r.caller) + " → " + (svc(r.callee) || r.topic || "?") + "  "), el("span", "m", r.method || r.event_type || r.kind));
      label.title = r.kind + " " + (r.method || "") + " (" + r.status + ")";
      const track = el("div", "wf-track");
      const seg = (cls, a, b, tip) => {
        if (!a || !b) return;
        const s = el("div", "wf-seg " + cls);
        const l = pct(a), w = Math.max(0.3, pct(b) - l);
        s.style.left = l.toFixed(2) + "%";
        s.style.width = w.toFixed(2) + "%";
        s.title = tip + ": " + ms(a, b).toFixed(1) + " ms";
        s.dataset.seg = cls.replace("seg-", "");
        track.appendChild(s);
      };
      if (r.kind === "call") {
        seg("seg-queue", r.published, r.delivered, "queue wait");
        seg("seg-server", r.delivered, r.replied, "server time");
        seg("seg-transit", r.replied, r.reply_delivered, "reply transit");
        if (r.status === "timeout") seg("seg-timeout", r.delivered || r.published, r.deadline, "timed out");
      } else {
        seg("seg-queue", r.published, r.delivered, "queue wait");
        if (!r.delivered && r.published) seg("seg-cast", r.published, r.published, r.kind);
      }
      const last = r.reply_delivered || r.replied || r.deadline || r.delivered || r.published;
      if (last) {
        const d = el("span", "wf-dur", r.kind === "call" ? fmtUS(r.duration_us) : r.kind);
        const at = pct(last);
        // Right of the bar when there is room, else inside its right end (right-aligned).
        if (at < 85) d.style.left = at.toFixed(2) + "%";
        else { d.style.right = (100 - at).toFixed(2) + "%"; d.classList.add("inside"); }
        track.appendChild(d);
      }
      row.append(label, track);
      row.addEventListener("click", () => showCall(r.id));
      wf.appendChild(row);
    }
    body.appendChild(wf);
  }

  // ---------- websocket: snapshot + deltas, reconnect with backoff ----------
  let ws = null, backoff = 500, reconnectTimer = 0;
  function setConn(s, text) {
    $("conn").dataset.state = s;
    $("conntext").textContent = text;
  }
  function connect() {
    reconnectTimer = 0;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + "api/ws";
    let sock;
    try { sock = new WebSocket(url); } catch (e) { scheduleReconnect(); return; }
    ws = sock;
    setConn("connecting", "connecting…");
    sock.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "snapshot") {
        if (state.instance && m.instance !== state.instance) resetRows(); // a restarted server reuses record ids
        state.instance = m.instance;
        state.seq = m.seq;
        backoff = 500;
        setConn("live", "live");
      } else if (m.type === "delta") {
        if (m.seq !== state.seq + 1) {
          // A gap: we missed an update. Drop this socket; the reconnect starts from a fresh snapshot.
          setConn("connecting", "resyncing…");
          sock.close();
          return;
        }
        state.seq = m.seq;
      } else return;
      document.body.dataset.seq = String(state.seq);
      state.jaeger = !!m.jaeger;
      if (m.graph) { state.graph = m.graph; renderGraph(m.graph, m.type === "delta"); }
      renderHeadline(m.headline);
      addRows(m.calls, m.type === "delta");
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      setConn("down", "disconnected — retrying");
      scheduleReconnect();
    };
    sock.onerror = () => { /* onclose follows */ };
  }
  function scheduleReconnect() {
    if (reconnectTimer) return;
    const wait = backoff * (0.75 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, 10000);
    reconnectTimer = setTimeout(connect, wait);
  }

  // ---------- wiring ----------
  function init() {
    initGraph();
    $("filter").addEventListener("input", applyFilter);
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      if (!state.paused) { const buf = state.pausedBuf; state.pausedBuf = []; addRows(buf, false); }
      updatePauseButton();
    });
    tbody().addEventListener("click", (ev) => {
      const req = ev.target.closest("[data-req]");
      if (req) { ev.stopPropagation(); showRequest(req.dataset.req); return; }
      const tr = ev.target.closest("tr[data-id]");
      if (tr) showCall(tr.dataset.id);
    });
    $("panelbody").addEventListener("click", (ev) => {
      const req = ev.target.closest("[data-req]");
      if (req) showRequest(req.dataset.req);
    });
    $("panelclose").addEventListener("click", () => { $("panel").hidden = true; });
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") $("panel").hidden = true; });
    $("reqform").addEventListener("submit", (ev) => { ev.preventDefault(); showRequest($("reqinput").value); });
    updateCount();
    connect();
  }
  init();
})();

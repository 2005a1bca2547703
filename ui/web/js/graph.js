// The service graph: dagre's layered layout (layout.js), drawn in SVG with zoom, pan, fit, search, edge labels
// where they have room, a tooltip with the whole story of a node or an edge, and pulses along busy edges.
import { $, el, sv, clear, fmtUS, fmtRate, fmtPct, fmtMS, fmtShort, textWidth } from "./util.js";
import { layout, collapse, nodeWidth, FONT_SUB, NODE_H } from "./layout.js";
import { edgeHealth, nodeHealth } from "./health.js";

const COLORS = { ok: "#6e8fb0", warn: "#d29922", bad: "#f85149", fanout: "#bc8cff", notif: "#39c5cf" };
const EDGE_FONT = "10px ui-sans-serif, system-ui, sans-serif";

const els = { svg: null, viewport: null, edges: null, pulses: null, nodes: null, labels: null };
const nodeEls = new Map(), edgeEls = new Map();
let current = null;        // the graph as drawn (after collapsing)
let lay = null;            // the layout in use
let layKey = "";           // what the layout was computed for: node ids and widths, edge pairs
let view = { k: 1, tx: 0, ty: 0 };
let userMoved = false;     // the user zoomed or panned: updates do not refit
let selected = "";         // node id selected (route ?service=)
let opts = { group: false, onNode: () => {}, onEdge: () => {} };

export function initGraph(o) {
  Object.assign(opts, o);
  const svg = $("graph");
  els.svg = svg;
  const defs = sv("defs");
  for (const [name, color] of Object.entries(COLORS)) {
    const m = sv("marker", { id: "arrow-" + name, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7",
      markerHeight: "7", orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" });
    m.appendChild(sv("path", { d: "M0,0 L10,5 L0,10 z", fill: color }));
    defs.appendChild(m);
  }
  svg.appendChild(defs);
  els.viewport = sv("g", { id: "viewport" });
  els.edges = sv("g");
  els.pulses = sv("g");
  els.nodes = sv("g");
  els.labels = sv("g", { class: "edgelabels" });
  els.viewport.append(els.edges, els.pulses, els.nodes, els.labels);
  svg.appendChild(els.viewport);
  initZoom(svg);
  window.addEventListener("resize", () => { if (current) { layKey = ""; render(current, false); } });
  $("zoomin").addEventListener("click", () => zoomAt(1.25));
  $("zoomout").addEventListener("click", () => zoomAt(0.8));
  $("zoomfit").addEventListener("click", () => { userMoved = false; fit(); });
  $("nodesearch").addEventListener("input", () => search($("nodesearch").value, false));
  $("nodesearch").addEventListener("keydown", (ev) => { if (ev.key === "Enter") search($("nodesearch").value, true); });
}

// refit makes the next layout fit the pane again (the graph shown changed: by host, by project).
export function refit() { userMoved = false; layKey = ""; }

export function setGroup(on) {
  if (opts.group === !!on) return;
  opts.group = !!on;
  layKey = "";
  userMoved = false;
}

// select marks a node and brings it into view, once per selection and layout: later updates leave the view to
// the user.
let centered = "";
export function select(id) {
  selected = id || "";
  for (const [nid, gn] of nodeEls) gn.g.classList.toggle("sel", nid === selected);
  const key = selected + "#" + layKey;
  if (selected && lay && lay.pos.has(selected) && centered !== key) {
    centered = key;
    center(selected, Math.max(view.k, 0.9));
  }
}

// ---------- zoom and pan ----------
function applyView() {
  els.viewport.setAttribute("transform", `translate(${view.tx.toFixed(1)},${view.ty.toFixed(1)}) scale(${view.k.toFixed(4)})`);
  els.svg.dataset.scale = view.k.toFixed(3);
  els.labels.classList.toggle("small", view.k < 0.75);
}
function size() { return { W: Math.max(300, els.svg.clientWidth), H: Math.max(160, els.svg.clientHeight) }; }
function zoomAt(f, cx, cy) {
  const { W, H } = size();
  if (cx === undefined) { cx = W / 2; cy = H / 2; }
  const k = Math.min(4, Math.max(0.1, view.k * f));
  view.tx = cx - (cx - view.tx) * (k / view.k);
  view.ty = cy - (cy - view.ty) * (k / view.k);
  view.k = k;
  userMoved = true;
  applyView();
}
function initZoom(svg) {
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 || ev.target.closest(".node, .edge")) return;
    drag = { x: ev.clientX, y: ev.clientY, tx: view.tx, ty: view.ty };
    svg.setPointerCapture(ev.pointerId);
    svg.classList.add("panning");
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    view.tx = drag.tx + ev.clientX - drag.x;
    view.ty = drag.ty + ev.clientY - drag.y;
    userMoved = true;
    applyView();
  });
  const end = () => { drag = null; svg.classList.remove("panning"); };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
}

// fit scales the whole drawing into the pane (never above 1.2×: a small graph stays at its natural size).
export function fit() {
  if (!lay) return;
  const { W, H } = size();
  const m = 12;
  const k = Math.min(1.2, (W - 2 * m) / Math.max(1, lay.width), (H - 2 * m) / Math.max(1, lay.height));
  view.k = k;
  view.tx = (W - lay.width * k) / 2;
  view.ty = (H - lay.height * k) / 2;
  applyView();
  els.svg.dataset.fit = W + "x" + H; // what the last fit was for (the browser tests wait on it)
}

function center(id, k) {
  const p = lay.pos.get(id);
  if (!p) return;
  const { W, H } = size();
  view.k = k;
  view.tx = W / 2 - p.x * k;
  view.ty = H / 2 - p.y * k;
  userMoved = true;
  applyView();
}

// search marks the nodes whose label contains the text; go centres the first.
function search(text, go) {
  const t = text.trim().toLowerCase();
  let first = null, n = 0;
  for (const [id, gn] of nodeEls) {
    const hit = t !== "" && (gn.data.label || id).toLowerCase().includes(t);
    gn.g.classList.toggle("match", hit);
    if (hit) { n++; if (!first) first = id; }
  }
  $("searchcount").textContent = t ? n + " found" : "";
  if (go && first) center(first, Math.max(view.k, 1));
}

// ---------- drawing ----------
function pathFrom(pts) {
  if (pts.length < 2) return "";
  let d = `M${pts[0].x.toFixed(1)},${pts[0].y.toFixed(1)}`;
  for (let i = 0; i < pts.length - 1; i++) {
    const p0 = pts[i - 1] || pts[i], p1 = pts[i], p2 = pts[i + 1], p3 = pts[i + 2] || p2;
    const c1x = p1.x + (p2.x - p0.x) / 6, c1y = p1.y + (p2.y - p0.y) / 6;
    const c2x = p2.x - (p3.x - p1.x) / 6, c2y = p2.y - (p3.y - p1.y) / 6;
    d += ` C${c1x.toFixed(1)},${c1y.toFixed(1)} ${c2x.toFixed(1)},${c2y.toFixed(1)} ${p2.x.toFixed(1)},${p2.y.toFixed(1)}`;
  }
  return d;
}

function routeOf(e) {
  if (e.from === e.to) {
    const p = lay.pos.get(e.from);
    const x = p.x + p.w / 2, y = p.y;
    return `M${x},${y - 8} C${x + 40},${y - 34} ${x + 40},${y + 34} ${x},${y + 8}`;
  }
  const r = lay.routes.get(e.id);
  if (!r) return freeRoute(lay.pos.get(e.from), lay.pos.get(e.to));
  if (r.pts.length < 2) return "";
  let pts = r.pts;
  if (r.lane) {
    const a = pts[0], b = pts[pts.length - 1];
    const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
    const nx = -(b.y - a.y) / len * 6 * r.lane, ny = (b.x - a.x) / len * 6 * r.lane;
    pts = pts.map((p, i) => (i === 0 || i === pts.length - 1 ? { x: p.x + nx / 2, y: p.y + ny / 2 } : { x: p.x + nx, y: p.y + ny }));
  }
  return pathFrom(pts);
}

// freeRoute is a curve between two boxes for an edge the layout did not route (a notification to a listener):
// from the border of one to the border of the other, bowed a little so parallel ones stay apart.
function freeRoute(a, b) {
  if (!a || !b) return "";
  const clip = (p, q) => {
    const dx = q.x - p.x, dy = q.y - p.y;
    const t = Math.min(dx ? (p.w / 2) / Math.abs(dx) : Infinity, dy ? (p.h / 2) / Math.abs(dy) : Infinity, 1);
    return { x: p.x + dx * t, y: p.y + dy * t };
  };
  const s = clip(a, b), t = clip(b, a);
  const mx = (s.x + t.x) / 2, my = (s.y + t.y) / 2, len = Math.hypot(t.x - s.x, t.y - s.y) || 1;
  const bow = Math.min(60, len / 6);
  const cx = mx - (t.y - s.y) / len * bow, cy = my + (t.x - s.x) / len * bow;
  return `M${s.x.toFixed(1)},${s.y.toFixed(1)} Q${cx.toFixed(1)},${cy.toFixed(1)} ${t.x.toFixed(1)},${t.y.toFixed(1)}`;
}

function edgeStyle(e) {
  const h = edgeHealth(e);
  if (h.level === 2) return { color: COLORS.bad, mk: "bad", h };
  if (h.level === 1) return { color: COLORS.warn, mk: "warn", h };
  if (e.type === "fanout") return { color: COLORS.fanout, mk: "fanout", h };
  if (e.type === "notification") return { color: COLORS.notif, mk: "notif", h };
  return { color: COLORS.ok, mk: "ok", h };
}

function edgeLabelText(e) {
  let t = fmtRate(e.rate) + "/s";
  if (e.p99_us > 0) t += " · p99 " + fmtUS(e.p99_us);
  if (e.errors + e.timeouts > 0) t += " · ✗" + (e.errors + e.timeouts);
  return t;
}

// chooseLayout lays the graph out left to right and top to bottom and keeps the one that fits the pane larger.
function chooseLayout(nodes, edges) {
  const { W, H } = size();
  let best = null, bestK = -1;
  for (const dir of ["LR", "TB"]) {
    const l = layout(nodes, edges, dir, W / H);
    const k = Math.min(W / Math.max(1, l.width), H / Math.max(1, l.height));
    if (k > bestK) { best = l; bestK = k; }
  }
  return best;
}

export function render(raw, pulse) {
  const g = opts.group ? collapse(raw) : raw;
  current = raw;
  $("graphempty").hidden = g.nodes.length > 0;
  for (const n of g.nodes) n._w = nodeWidth(n);
  const key = g.nodes.map((n) => n.id + ":" + n._w).join("|") + "#" +
    g.edges.map((e) => e.from + ">" + e.to).sort().join("|");
  if (key !== layKey) {
    lay = chooseLayout(g.nodes, g.edges);
    layKey = key;
    els.svg.dataset.dir = lay.dir;
    if (!userMoved) fit();
  }
  const inEdges = new Map();
  for (const e of g.edges) { if (!inEdges.has(e.to)) inEdges.set(e.to, []); inEdges.get(e.to).push(e); }
  drawEdges(g, pulse);
  drawNodes(g, inEdges);
  placeLabels(g);
  if (selected) for (const [nid, gn] of nodeEls) gn.g.classList.toggle("sel", nid === selected);
}

function drawEdges(g, pulse) {
  const seen = new Set();
  for (const e of g.edges) {
    seen.add(e.id);
    let ge = edgeEls.get(e.id);
    if (!ge) {
      ge = { g: sv("g", { class: "edge" }), line: sv("path", { class: "line" }), hit: sv("path", { class: "hit" }),
        label: sv("text", { "text-anchor": "middle", class: "elabel" }) };
      ge.g.setAttribute("data-edge", e.id);
      ge.g.setAttribute("data-from", e.from);
      ge.g.setAttribute("data-to", e.to);
      ge.label.setAttribute("data-for", e.id);
      ge.g.append(ge.line, ge.hit);
      ge.g.addEventListener("mousemove", (ev) => { ge.label.classList.add("hover"); showTip(ev, edgeTip(ge.data)); });
      ge.g.addEventListener("mouseleave", () => { ge.label.classList.remove("hover"); hideTip(); });
      ge.g.addEventListener("click", () => opts.onEdge(ge.data));
      els.edges.appendChild(ge.g);
      els.labels.appendChild(ge.label);
      edgeEls.set(e.id, ge);
    }
    ge.data = e;
    const d = routeOf(e);
    const st = edgeStyle(e);
    const width = 1.5 + Math.min(7, Math.log2(1 + e.rate) * 1.3);
    ge.line.setAttribute("d", d);
    ge.hit.setAttribute("d", d);
    ge.line.setAttribute("stroke", st.color);
    ge.line.setAttribute("stroke-width", width.toFixed(1));
    ge.line.setAttribute("marker-end", `url(#arrow-${st.mk})`);
    ge.line.setAttribute("stroke-dasharray", e.type === "fanout" ? "8 5" : e.type === "notification" ? "2 5" : "none");
    ge.g.setAttribute("data-type", e.type);
    ge.g.setAttribute("data-health", String(st.h.level));
    ge.g.classList.toggle("idle", e.rate === 0);
    ge.label.textContent = edgeLabelText(e);
    ge.color = st.color;
    if (pulse && e.new > 0 && d) {
      const len = ge.line.getTotalLength();
      for (let k = 0; k < Math.min(e.new, 2); k++) addPulse(ge.line, len, k * 160, st.color);
    }
  }
  for (const [id, ge] of edgeEls) if (!seen.has(id)) { ge.g.remove(); ge.label.remove(); edgeEls.delete(id); }
}

// subLines are a node's second and third lines: its rates; then what waits in it now (saturated, in hand, its
// queue), else the split of the calls to it (worst p99 of its flows: queue wait, server time, reply transit), else
// its role and the topic it serves.
function subLines(n, inEdges) {
  const rates = "in " + fmtRate(n.in_rate) + "/s · out " + fmtRate(n.out_rate) + "/s";
  const live = [];
  if (n.saturated) live.push("saturated " + (n.handling || 0) + "/" + (n.peak_handling || n.handling || 0));
  else if (n.in_flight) live.push(n.in_flight + " in hand");
  if (n.queue_depth) live.push("q " + n.queue_depth + " · " + fmtMS(n.queue_oldest_ms));
  const calls = (inEdges || []).filter((e) => e.type === "rpc" && e.server_p99_us > 0);
  if (!live.length && calls.length) {
    const worst = (k) => calls.reduce((m, e) => Math.max(m, e[k] || 0), 0);
    live.push("q " + fmtShort(worst("queue_p99_us")) + " · srv " + fmtShort(worst("server_p99_us")) + " · ret " + fmtShort(worst("transit_p99_us")));
  }
  if (!live.length && n.awaiting) live.push(n.awaiting + " awaiting");
  if (!live.length && n.role && n.role !== "project") live.push(n.role + (n.serves && n.serves.length ? ": " + n.serves[0] + (n.serves.length > 1 ? " +" + (n.serves.length - 1) : "") : ""));
  return [rates, live.join(" · ")];
}

function drawNodes(g, inEdges) {
  const seen = new Set();
  for (const n of g.nodes) {
    seen.add(n.id);
    let gn = nodeEls.get(n.id);
    if (!gn) {
      gn = { g: sv("g", { class: "node" }), rect: sv("rect", { rx: "5", ry: "5" }),
        text: sv("text", { "text-anchor": "middle", class: "name" }),
        sub: sv("text", { "text-anchor": "middle", class: "sub" }), live: sv("text", { "text-anchor": "middle", class: "sub live" }) };
      gn.g.setAttribute("data-node", n.id);
      gn.g.append(gn.rect, gn.text, gn.sub, gn.live);
      gn.g.addEventListener("mousemove", (ev) => showTip(ev, nodeTip(gn.data)));
      gn.g.addEventListener("mouseleave", hideTip);
      gn.g.addEventListener("click", () => opts.onNode(gn.data));
      els.nodes.appendChild(gn.g);
      nodeEls.set(n.id, gn);
    }
    gn.data = n;
    const p = lay.pos.get(n.id);
    const h = nodeHealth(n, inEdges.get(n.id));
    gn.g.setAttribute("class", "node " + n.kind + " role-" + (n.role || "") + " h" + h.level + (n.saturated ? " saturated" : "") +
      (gn.g.classList.contains("match") ? " match" : ""));
    gn.g.dataset.role = n.role || "";
    gn.rect.setAttribute("x", (p.x - p.w / 2).toFixed(1));
    gn.rect.setAttribute("y", (p.y - p.h / 2).toFixed(1));
    gn.rect.setAttribute("width", p.w);
    gn.rect.setAttribute("height", p.h);
    const [rates, live] = subLines(n, inEdges.get(n.id));
    for (const [t, dy, txt] of [[gn.text, -9, n.label || n.id], [gn.sub, 5, rates], [gn.live, 18, live]]) {
      t.setAttribute("x", p.x.toFixed(1));
      t.setAttribute("y", (p.y + dy).toFixed(1));
      t.textContent = txt;
    }
    // A sub-line longer than the box (a rare long live line) is cut to fit: the tooltip has it whole.
    const room = p.w - 12;
    for (const t of [gn.sub, gn.live]) {
      let s = t.textContent;
      while (s.length > 4 && textWidth(s, FONT_SUB) > room) s = s.slice(0, -2);
      if (s !== t.textContent) t.textContent = s.slice(0, -1) + "…";
    }
  }
  for (const [id, gn] of nodeEls) if (!seen.has(id)) { gn.g.remove(); nodeEls.delete(id); }
}

// placeLabels shows an edge's label only where it overlaps no node and no other label, busiest edges first; the
// others show on hover.
function placeLabels(g) {
  const boxes = [];
  for (const n of g.nodes) {
    const p = lay.pos.get(n.id);
    boxes.push({ x1: p.x - p.w / 2 - 2, y1: p.y - NODE_H / 2 - 2, x2: p.x + p.w / 2 + 2, y2: p.y + NODE_H / 2 + 2 });
  }
  const hit = (b) => boxes.some((o) => b.x1 < o.x2 && b.x2 > o.x1 && b.y1 < o.y2 && b.y2 > o.y1);
  const order = g.edges.slice().sort((a, b) => b.rate - a.rate);
  for (const e of order) {
    const ge = edgeEls.get(e.id);
    if (!ge || !ge.line.getAttribute("d")) continue;
    if (e.type === "notification" && !lay.routes.has(e.id)) { ge.label.classList.remove("room"); continue; } // on hover only
    const len = ge.line.getTotalLength();
    const mid = ge.line.getPointAtLength(len / 2);
    const w = textWidth(ge.label.textContent, EDGE_FONT) + 6;
    ge.label.setAttribute("x", mid.x.toFixed(1));
    ge.label.setAttribute("y", (mid.y + 3).toFixed(1));

    // Beside the line's middle (right or left of a steep line, above or below a flat one), else on it: the
    // first place that is free.
    const a = ge.line.getPointAtLength(Math.max(0, len / 2 - 3)), z = ge.line.getPointAtLength(Math.min(len, len / 2 + 3));
    const steep = Math.abs(z.y - a.y) > Math.abs(z.x - a.x);
    const side = steep ? [[w / 2 + 6, 0], [-w / 2 - 6, 0]] : [[0, -10], [0, 11]];
    let placed = false;
    for (const [dx, dy] of [...side, [0, 0]]) {
      const x = mid.x + dx, y = mid.y + dy;
      const b = { x1: x - w / 2, y1: y - 7, x2: x + w / 2, y2: y + 6 };
      if (len < 24 || hit(b)) continue;
      ge.label.setAttribute("x", x.toFixed(1));
      ge.label.setAttribute("y", (y + 3).toFixed(1));
      boxes.push(b);
      placed = true;
      break;
    }
    ge.label.classList.toggle("room", placed);
  }
}

// ---------- pulses ----------
const pulses = [];
let pulseRAF = 0;
function addPulse(path, len, delay, color) {
  if (pulses.length > 120) return;
  const c = sv("circle", { r: "3", class: "pulse", fill: color, cx: "-1000", cy: "-1000" });
  els.pulses.appendChild(c);
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

// ---------- tooltip ----------
export function showTip(ev, lines) {
  const tip = $("tooltip");
  clear(tip);
  lines.forEach((l, i) => tip.appendChild(el("div", i === 0 ? "t" : "", l)));
  tip.hidden = false;
  const r = $("graphwrap").getBoundingClientRect();
  const tw = tip.offsetWidth, th = tip.offsetHeight;
  let x = ev.clientX - r.left + 14, y = ev.clientY - r.top + 14;
  if (x + tw > r.width - 4) x = Math.max(4, ev.clientX - r.left - tw - 14);
  if (y + th > r.height - 4) y = Math.max(4, ev.clientY - r.top - th - 14);
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}
export function hideTip() { $("tooltip").hidden = true; }

export function edgeTip(e) {
  const out = [e.from + " → " + e.to + "  (" + e.type + ")",
    "rate " + fmtRate(e.rate) + "/s (calls " + fmtRate(e.call_rate) + "/s, casts " + fmtRate(e.cast_rate) + "/s)",
    "60 s: " + e.calls + " calls, " + e.casts + " casts, " + e.fanouts + " fanouts, " + e.notifications + " notifications"];
  if (e.queue_p99_us > 0 || e.server_p99_us > 0) {
    out.push("queue wait p50 " + fmtUS(e.queue_p50_us) + " · p99 " + fmtUS(e.queue_p99_us));
    if (e.server_p99_us > 0) out.push("server time p50 " + fmtUS(e.server_p50_us) + " · p99 " + fmtUS(e.server_p99_us));
    if (e.transit_p99_us > 0) out.push("reply transit p50 " + fmtUS(e.transit_p50_us) + " · p99 " + fmtUS(e.transit_p99_us));
  }
  if (e.p50_us > 0) out.push("total p50 " + fmtUS(e.p50_us) + " · p99 " + fmtUS(e.p99_us) +
    (e.base_p99_us > 0 ? " (p99 now " + fmtUS(e.recent_p99_us) + ", before " + fmtUS(e.base_p99_us) + ")" : ""));
  out.push("errors " + e.errors + " · timeouts " + e.timeouts + " (" + fmtPct(e.timeout_ratio) + ") · unroutable " + e.unroutable +
    " · error rate " + fmtPct(e.error_ratio));
  if (e.in_flight) out.push(e.in_flight + " calls in flight on this edge");
  for (const w of edgeHealth(e).why) out.push("⚠ " + w);
  if (e.topics && e.topics.length) out.push("topics: " + e.topics.join(", "));
  if (e.methods && e.methods.length) out.push("methods: " + e.methods.join(", "));
  return out;
}

export function nodeTip(n) {
  const out = [n.label || n.id];
  const inbound = current ? (opts.group ? collapse(current) : current).edges.filter((e) => e.to === n.id && e.type === "rpc") : [];
  const worst = (k) => inbound.reduce((m, e) => Math.max(m, e[k] || 0), 0);
  if (n.members) out.push(n.members.length + " services: " + n.members.join(", "));
  else if (n.kind === "topic") out.push("destination with no consumer behind the proxy");
  else out.push("role " + (n.role || "?") + (n.serves && n.serves.length ? " · serves " + n.serves.join(", ") : ""));
  out.push("in " + fmtRate(n.in_rate) + "/s · out " + fmtRate(n.out_rate) + "/s");
  if (n.in_flight || n.handling || n.peak_handling) out.push("in hand " + (n.in_flight || 0) + " · workers busy " + (n.handling || 0) + " · peak " + (n.peak_handling || 0));
  if (n.saturated) out.push("⚠ saturated: every worker seen is busy and calls wait in the process");
  if (n.queue_depth) out.push("queued for it: " + n.queue_depth + " · oldest " + fmtMS(n.queue_oldest_ms));
  if (n.awaiting) out.push("awaiting replies: " + n.awaiting);
  if (worst("queue_p99_us") || worst("server_p99_us")) {
    out.push("calls to it, worst edge p99: queue " + fmtUS(worst("queue_p99_us")) + " · server " + fmtUS(worst("server_p99_us")) +
      " · reply " + fmtUS(worst("transit_p99_us")));
    const tr = inbound.reduce((m, e) => Math.max(m, e.timeout_ratio || 0), 0), er = inbound.reduce((m, e) => Math.max(m, e.error_ratio || 0), 0);
    out.push("worst edge error rate " + fmtPct(er) + " · timeouts " + fmtPct(tr));
  }
  if (n.errors) out.push("errors + timeouts (60 s): " + n.errors);
  out.push("click to select and list its calls");
  return out;
}

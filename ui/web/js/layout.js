// Graph layout: ranks from what the wire says, positions from dagre's layered layout.
//
// dagre places nodes in layers along the edges' direction and sizes the gaps from each node's width and height,
// so boxes never overlap whatever the names. The direction comes from the traffic: a depth-first walk from the
// nodes nobody sends anything to (clients, in the server's roles) orders the flow, and an edge that points back
// up that order (an agent reporting to the server that fans out to it, a compute calling its conductor) is laid
// out reversed, so it does not pull its caller down a layer. It is still drawn in its own direction.
import dagre from "../vendor/dagre.esm.js";
import { textWidth } from "./util.js";

export const FONT_LABEL = "600 12px ui-sans-serif, system-ui, sans-serif";
export const FONT_SUB = "10px ui-sans-serif, system-ui, sans-serif";
export const NODE_H = 50;
const PAD_X = 12;
// Room for the sub-lines ("in 123/s · out 45.6/s", "q 12 · 1.50 s · sat 4/4", "q 999ms · srv 999ms · ret 999ms"),
// measured once.
let subMin = 0;

// project is the name's first word (nova-api → nova): only used to collapse a project on request.
export function project(n) {
  const s = n.service || n.label || n.id;
  if (n.kind === "topic") return "topics";
  const i = s.search(/[-_ .@]/);
  return i > 0 ? s.slice(0, i) : s;
}

export function nodeWidth(n) {
  if (!subMin) subMin = textWidth("q 999ms · srv 999ms · ret 999ms", FONT_SUB);
  const w = Math.max(textWidth(n.label || n.id, FONT_LABEL), subMin);
  return Math.ceil((w + 2 * PAD_X) / 10) * 10;
}

// depths orders nodes along the flow: a walk from the roots (nodes with no edge into them; when a part of the
// graph has none, the node that sends most relative to what it receives), breadth first.
function depths(nodes, edges) {
  const out = new Map(), indeg = new Map(), sent = new Map(), got = new Map();
  for (const n of nodes) { out.set(n.id, []); indeg.set(n.id, 0); sent.set(n.id, 0); got.set(n.id, 0); }
  for (const e of edges) {
    if (e.from === e.to || !out.has(e.from) || !out.has(e.to)) continue;
    out.get(e.from).push(e.to);
    indeg.set(e.to, indeg.get(e.to) + 1);
    sent.set(e.from, sent.get(e.from) + 1 + e.rate);
    got.set(e.to, got.get(e.to) + 1 + e.rate);
  }
  const depth = new Map();
  const walk = (roots) => {
    const q = roots.slice();
    for (const r of roots) depth.set(r, 0);
    while (q.length) {
      const id = q.shift();
      for (const to of out.get(id)) {
        if (!depth.has(to)) { depth.set(to, depth.get(id) + 1); q.push(to); }
      }
    }
  };
  const ids = nodes.map((n) => n.id).sort();
  walk(ids.filter((id) => indeg.get(id) === 0));
  const roleRank = { client: 0, unknown: 0, server: 1, agent: 2, listener: 3, topic: 4 };
  const role = new Map(nodes.map((n) => [n.id, roleRank[n.role] ?? 1]));
  const fans = new Set(edges.filter((e) => e.type === "fanout").map((e) => e.from));
  for (;;) {
    const left = ids.filter((id) => !depth.has(id));
    if (!left.length) break;
    // A cycle with no way in (a server fanning out to agents that report back to it): start from the node whose
    // role comes first in a request's flow, then one that fans out, then the one that sends most for what it
    // receives; a name that says "api" only breaks a last tie.
    left.sort((a, b) => role.get(a) - role.get(b) || (fans.has(b) ? 1 : 0) - (fans.has(a) ? 1 : 0) ||
      (sent.get(b) - got.get(b)) - (sent.get(a) - got.get(a)) ||
      (/api/.test(b) ? 1 : 0) - (/api/.test(a) ? 1 : 0) || (a < b ? -1 : 1));
    walk([left[0]]);
  }
  return depth;
}

// inLayout says whether an edge shapes the layout. Notifications to a listener do not: every service notifies
// the same few listeners, and letting those edges pull would make the whole cloud one tangle. They are drawn
// (dotted) between the boxes wherever the rest put them. A notification to an unconsumed topic does: it keeps
// the topic beside its publisher.
export function inLayout(e, kindOf) { return e.type !== "notification" || kindOf(e.to) === "topic"; }

// layoutOne lays out one connected part with dagre.
function layoutOne(nodes, edges, depth, dir) {
  const g = new dagre.graphlib.Graph({ multigraph: false });
  g.setGraph({ rankdir: dir, nodesep: dir === "LR" ? 14 : 22, ranksep: dir === "LR" ? 60 : 50, edgesep: 8,
    marginx: 0, marginy: 0, ranker: "network-simplex" });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: n._w, height: NODE_H });
  const pairs = new Map();
  for (const e of edges) {
    if (e.from === e.to || !g.hasNode(e.from) || !g.hasNode(e.to)) continue;
    const back = depth.get(e.from) >= depth.get(e.to);
    const [u, v] = back ? [e.to, e.from] : [e.from, e.to];
    const k = u + "\u0000" + v;
    const p = pairs.get(k);
    if (p) { p.weight += 1; p.edges.push({ e, back }); continue; }
    pairs.set(k, { u, v, weight: 1, edges: [{ e, back }] });
  }
  for (const p of pairs.values()) g.setEdge(p.u, p.v, { weight: p.weight, minlen: 1 });
  dagre.layout(g);
  const pos = new Map();
  for (const n of nodes) {
    const d = g.node(n.id);
    pos.set(n.id, { x: d.x, y: d.y, w: d.width, h: d.height });
  }
  const routes = new Map();
  for (const p of pairs.values()) {
    const pts = g.edge(p.u, p.v).points || [];
    p.edges.forEach(({ e, back }, i) => {
      routes.set(e.id, { pts: back ? pts.slice().reverse() : pts.slice(), lane: i - (p.edges.length - 1) / 2 });
    });
  }
  const gg = g.graph();
  return { pos, routes, width: gg.width || 0, height: gg.height || 0 };
}

// layout returns positions {x, y, w, h} by node id, edge routes by edge id (none for the edges that do not shape
// the layout) and the drawing's size. Each connected part is laid out on its own and the parts are packed in
// rows to the pane's shape (aspect = width / height), biggest first. dir is "LR" or "TB".
export function layout(nodes, edges, dir, aspect) {
  const kind = new Map(nodes.map((n) => [n.id, n.kind]));
  const shaping = edges.filter((e) => inLayout(e, (id) => kind.get(id)));
  const depth = depths(nodes, shaping);
  // Connected parts (union-find over the shaping edges).
  const up = new Map(nodes.map((n) => [n.id, n.id]));
  const find = (x) => { while (up.get(x) !== x) { up.set(x, up.get(up.get(x))); x = up.get(x); } return x; };
  for (const e of shaping) if (up.has(e.from) && up.has(e.to)) up.set(find(e.from), find(e.to));
  const parts = new Map();
  for (const n of nodes) {
    const r = find(n.id);
    if (!parts.has(r)) parts.set(r, { nodes: [], edges: [] });
    parts.get(r).nodes.push(n);
  }
  for (const e of shaping) if (up.has(e.from)) parts.get(find(e.from)).edges.push(e);
  const laid = [...parts.values()].map((p) => layoutOne(p.nodes, p.edges, depth, dir));
  // Taller parts first (rows then waste little height); parts of the same height by their first node's name, so
  // the picture is stable.
  laid.sort((a, b) => b.height - a.height || b.width - a.width || ([...a.pos.keys()][0] < [...b.pos.keys()][0] ? -1 : 1));
  // Row width: the one, of a range around the square root of the parts' area times the pane's shape, whose
  // packing fits the pane largest.
  const area = laid.reduce((sum, l) => sum + (l.width + GAP) * (l.height + GAP), 0);
  const widest = laid.reduce((m, l) => Math.max(m, l.width), 0);
  const base = Math.sqrt(area * (aspect || 1.6));
  let best = null;
  for (let f = 0.7; f <= 2.5; f += 0.1) {
    const p = pack(laid, Math.max(widest, base * f));
    const k = Math.min((aspect || 1.6) / p.width, 1 / p.height); // the fit scale, up to the pane's height
    if (!best || k > best.k) best = Object.assign(p, { k });
  }
  return { pos: best.pos, routes: best.routes, width: best.width, height: best.height, dir };
}

const GAP = 28, M = 16;

// pack places laid-out parts in rows no wider than rowW, in order.
function pack(laid, rowW) {
  const pos = new Map(), routes = new Map();
  let x = 0, y = 0, rowH = 0, width = 0;
  for (const l of laid) {
    if (x > 0 && x + l.width > rowW) { x = 0; y += rowH + GAP; rowH = 0; }
    const dx = M + x, dy = M + y;
    for (const [id, p] of l.pos) pos.set(id, { x: p.x + dx, y: p.y + dy, w: p.w, h: p.h });
    for (const [id, r] of l.routes) routes.set(id, { lane: r.lane, pts: r.pts.map((q) => ({ x: q.x + dx, y: q.y + dy })) });
    x += l.width + GAP;
    rowH = Math.max(rowH, l.height);
    width = Math.max(width, x - GAP);
  }
  return { pos, routes, width: width + 2 * M, height: y + rowH + 2 * M };
}

// collapse merges the nodes of each project into one node (edges between projects summed, inside one dropped).
export function collapse(graph) {
  const nodes = new Map(), edges = new Map(), of = new Map();
  for (const n of graph.nodes) {
    const p = project(n);
    of.set(n.id, "project:" + p);
    let m = nodes.get("project:" + p);
    if (!m) {
      m = { id: "project:" + p, label: p, kind: n.kind === "topic" ? "topic" : "project", role: "project",
        members: [], in_rate: 0, out_rate: 0, errors: 0, in_flight: 0, awaiting: 0, queue_depth: 0,
        queue_oldest_ms: 0, saturated: false };
      nodes.set(m.id, m);
    }
    m.members.push(n.label || n.id);
    m.in_rate += n.in_rate; m.out_rate += n.out_rate; m.errors += n.errors; m.in_flight += n.in_flight;
    m.awaiting += n.awaiting; m.queue_depth += n.queue_depth || 0;
    m.handling = (m.handling || 0) + (n.handling || 0);
    m.peak_handling = (m.peak_handling || 0) + (n.peak_handling || 0);
    m.queue_oldest_ms = Math.max(m.queue_oldest_ms, n.queue_oldest_ms || 0);
    m.saturated = m.saturated || !!n.saturated;
  }
  for (const m of nodes.values()) m.label = m.label + " (" + m.members.length + ")";
  for (const e of graph.edges) {
    const from = of.get(e.from), to = of.get(e.to);
    if (!from || !to || from === to) continue;
    const id = from + ">" + to + ">" + e.type;
    let m = edges.get(id);
    if (!m) { m = Object.assign({}, e, { id, from, to, methods: [], topics: [] }); edges.set(id, m); continue; }
    for (const k of ["rate", "call_rate", "cast_rate", "calls", "casts", "fanouts", "notifications", "errors",
      "timeouts", "unroutable", "new", "in_flight"]) m[k] = (m[k] || 0) + (e[k] || 0);
    for (const k of ["p50_us", "p99_us", "queue_p50_us", "queue_p99_us", "server_p50_us", "server_p99_us",
      "transit_p50_us", "transit_p99_us", "recent_p99_us", "base_p99_us", "recent_error_ratio", "base_error_ratio"])
      m[k] = Math.max(m[k] || 0, e[k] || 0);
    const tot = m.calls + m.casts + m.fanouts + m.notifications;
    m.error_ratio = tot ? (m.errors + m.timeouts + m.unroutable) / tot : 0;
  }
  return { by: graph.by, window_s: graph.window_s, nodes: [...nodes.values()], edges: [...edges.values()] };
}

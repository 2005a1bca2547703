// amqptrace live UI: the entry module. It wires the websocket to the graph, the worst-now list and the call
// table, opens the topology view (which polls the API itself), and routes the URL (router.js) to the views. Plain ES modules, no build step; the one third-party file is
// dagre (vendor/, with its licence).
import { $, fmtRate, fmtCount, setTimeZone, timeZone, onTimeZone, zoneName } from "./util.js";
import { state } from "./state.js";
import { connect, getJSON } from "./api.js";
import * as router from "./router.js";
import * as graph from "./graph.js";
import { renderWorst } from "./worst.js";
import * as table from "./table.js";
import { initPanel, closePanel } from "./panel.js";
import { showCall } from "./detail.js";
import { showRequest } from "./request.js";
import * as topology from "./topology.js";

function setCtr(id, text, box, bad) {
  $(id).textContent = text;
  if (box) $(box).classList.toggle("bad", !!bad);
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

// ---------- graph options from the route: ?by=host, ?group=project, ?service= ----------
let byHost = false, hostTimer = 0;
function graphParams() {
  const p = new URLSearchParams();
  if ($("byhost").checked) p.set("by", "host");
  if ($("groupproj").checked) p.set("group", "project");
  if (state.selService) p.set("service", state.selService);
  return p;
}
function drawGraph(pulse) {
  const g = byHost ? state.hostGraph : state.graph;
  if (!g) return;
  graph.render(g, pulse);
  renderWorst(g, (e) => { graph.select(e.to); });
  if (state.selService) graph.select(nodeIdOf(state.selService, g));
}
function nodeIdOf(service, g) {
  if (g.nodes.some((n) => n.id === service)) return service;
  const n = g.nodes.find((x) => x.service === service);
  return n ? n.id : service;
}
async function pollHost() {
  hostTimer = 0;
  if (!byHost) return;
  try { state.hostGraph = await getJSON("api/graph?by=host"); drawGraph(false); } catch (e) { /* next poll */ }
  if (byHost) hostTimer = setTimeout(pollHost, 2000);
}
function setByHost(on) {
  $("byhost").checked = on;
  if (byHost === on) return;
  byHost = on;
  graph.refit();
  if (on && !hostTimer) pollHost();
  if (!on) drawGraph(false);
}

// ---------- views ----------
function showView(name) {
  if (name !== "topology") topology.hide();
  document.body.dataset.view = name;
  for (const t of document.querySelectorAll("#tabs a")) t.classList.toggle("active", t.dataset.view === name);
}

function routeGraph(r) {
  closePanel();
  showView("graph");
  const p = r.params;
  state.selService = p.get("service") || "";
  $("groupproj").checked = p.get("group") === "project";
  graph.setGroup($("groupproj").checked);
  setByHost(p.get("by") === "host");
  drawGraph(false);
  if (!state.selService) graph.select("");
}

function routeCalls(r) {
  closePanel();
  showView("calls");
  const p = r.params;
  table.setFilter(p.get("q") || "");
  const s = table.sortState();
  const col = p.get("sort") || "time", dir = p.get("dir") || "desc";
  if (s.col !== col || s.dir !== dir) table.setSort(col, dir);
  callsTab();
}

function routeTopology(r) {
  closePanel();
  showView("topology");
  topology.show(r.params.get("q") || "");
}

function topologyURL() {
  const q = topology.filterText().trim();
  return router.hashFor("topology", "", q ? new URLSearchParams({ q }) : null);
}

function tableURL() {
  const p = new URLSearchParams();
  const q = table.filterText().trim();
  if (q) p.set("q", q);
  const s = table.sortState();
  if (s.col !== "time" || s.dir !== "desc") { p.set("sort", s.col); p.set("dir", s.dir); }
  return router.hashFor("calls", "", p);
}

// callsTab points the Calls tab at the table as it is (filter and sort), so going back to it keeps them.
function callsTab() { document.querySelector('#tabs a[data-view="calls"]').setAttribute("href", tableURL()); }

function init() {
  graph.initGraph({
    onNode: (n) => {
      if (n.kind === "service") { state.selService = n.id; router.go(router.hashFor("graph", "", graphParams()), true); }
      table.setFilter(n.kind === "service" ? "service:" + n.service : n.kind === "project" ? "" : (n.label || ""));
      callsTab();
    },
    onEdge: (e) => {
      if (e.from.startsWith("project:")) return; // a project's flows are many services': no one filter lists them
      router.go(router.hashFor("calls", "", new URLSearchParams({ q: "from:" + e.from + " to:" + e.to })));
    },
  });
  table.initTable({ onChange: () => { if (document.body.dataset.view === "calls") history.replaceState(null, "", tableURL()); callsTab(); } });
  topology.initTopology({ onFilter: () => { if (document.body.dataset.view === "topology") history.replaceState(null, "", topologyURL()); } });
  initPanel(() => { closePanel(); router.go(router.baseRoute()); });
  $("groupproj").addEventListener("change", () => router.go(router.hashFor("graph", "", graphParams()), true));
  $("byhost").addEventListener("change", () => router.go(router.hashFor("graph", "", graphParams()), true));
  $("calls").tBodies[0].addEventListener("click", (ev) => {
    const req = ev.target.closest("[data-req]");
    if (req) { ev.stopPropagation(); router.go(router.hashFor("request", req.dataset.req)); return; }
    const tr = ev.target.closest("tr[data-id]");
    if (tr) router.go(router.hashFor("call", tr.dataset.id));
  });
  $("panelbody").addEventListener("click", (ev) => {
    const req = ev.target.closest("[data-req]");
    if (req) router.go(router.hashFor("request", req.dataset.req));
  });
  $("reqform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("reqinput").value.trim();
    if (v) router.go(router.hashFor("request", v));
  });
  const tzb = $("tz");
  const showTZ = () => { tzb.textContent = zoneName(); tzb.dataset.zone = timeZone(); };
  tzb.addEventListener("click", () => setTimeZone(timeZone() === "utc" ? "local" : "utc"));
  onTimeZone(() => { showTZ(); table.retime(); router.route(); });
  showTZ();

  router.on("graph", routeGraph);
  router.on("calls", routeCalls);
  router.on("topology", routeTopology);
  router.on("call", (r) => { showBase(); showCall(r.arg); });
  router.on("request", (r) => { showBase(); showRequest(r.arg); });

  connect((m) => {
    if (m.type === "snapshot") {
      if (state.instance && m.instance !== state.instance) table.resetRows(); // a restarted server reuses ids
      state.instance = m.instance;
    }
    state.seq = m.seq;
    document.body.dataset.seq = String(m.seq);
    state.jaeger = !!m.jaeger;
    if (m.graph) { state.graph = m.graph; if (!byHost) drawGraph(m.type === "delta"); }
    renderHeadline(m.headline);
    table.addRows(m.calls, m.type === "delta");
  }, (s, text) => { $("conn").dataset.state = s; $("conntext").textContent = text; });
  router.start();
}

// showBase keeps the view under a detail panel: the graph or calls view the user came from (the graph when the
// page was opened on a detail's URL).
function showBase() {
  const b = router.parse(router.baseRoute());
  if (b.view === "topology") { showView("topology"); topology.show(b.params.get("q") || ""); return; }
  showView(b.view === "calls" ? "calls" : "graph");
}

init();

// Hash routes: every view has a URL that opens it directly.
//
//   #/graph[?service=S][&by=host][&group=project]   the service graph, S selected and in view
//   #/calls[?q=FILTER][&sort=COL][&dir=asc|desc]     the call table
//   #/topology[?q=TEXT]                             the broker's routing as the wire showed it
//   #/call/ID                                       one call's detail (over the last graph or calls view)
//   #/request/REQ-ID                                one request's RPCs as a tree

const handlers = {};
let base = "#/graph"; // the last graph, calls or topology route: where closing a detail panel returns

export function parse(hash) {
  const h = (hash || "").replace(/^#\/?/, "");
  const q = h.indexOf("?");
  const path = q >= 0 ? h.slice(0, q) : h;
  const params = new URLSearchParams(q >= 0 ? h.slice(q + 1) : "");
  const [view, ...rest] = path.split("/");
  let arg = rest.join("/");
  try { arg = decodeURIComponent(arg); } catch (e) { /* keep it raw */ }
  return { view: view || "graph", arg, params };
}

export function on(view, f) { handlers[view] = f; }

export function baseRoute() { return base; }

// go sets the URL; the hashchange listener then routes. replace keeps the history entry (filters as one types).
export function go(hash, replace) {
  if (location.hash === hash) { route(); return; }
  if (replace) { history.replaceState(null, "", hash); route(); } else location.hash = hash;
}

export function hashFor(view, arg, params) {
  let h = "#/" + view;
  if (arg !== undefined && arg !== null && arg !== "") h += "/" + encodeURIComponent(String(arg));
  const qs = params ? params.toString() : "";
  return qs ? h + "?" + qs : h;
}

export function route() {
  const r = parse(location.hash);
  if (r.view === "graph" || r.view === "calls" || r.view === "topology") base = location.hash || "#/graph";
  const f = handlers[r.view] || handlers.graph;
  f(r);
}

export function start() {
  window.addEventListener("hashchange", route);
  route();
}

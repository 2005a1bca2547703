// The page's shared state. window.__amqptrace points at it for the console and the browser tests.
export const state = {
  seq: -1,
  instance: "",
  graph: null,      // the last service graph from the websocket
  hostGraph: null,  // the last graph by host, fetched while the graph is split by host
  jaeger: false,
  route: { view: "graph", params: new URLSearchParams() },
};
window.__amqptrace = state;

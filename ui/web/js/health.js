// What is worse than usual: each edge against its own recent baseline (the server sends the last 10-15 s and the
// rest of the 60 s window separately), so a cloud with a steady 3% error rate is not painted red everywhere, and
// the "worst now" lists rank what changed.
import { fmtUS, fmtPct, fmtMS } from "./util.js";

// p99Increase is how many times slower an edge's recent p99 is than its baseline (1 when there is no baseline).
export function p99Increase(e) {
  if (!(e.base_p99_us > 0) || !(e.recent_p99_us > 0)) return 1;
  return e.recent_p99_us / e.base_p99_us;
}

// edgeHealth says how bad an edge is now: level 0 (as usual), 1 (worse), 2 (much worse), and why.
export function edgeHealth(e) {
  let level = 0;
  const why = [];
  const inc = p99Increase(e);
  // Slower: relative to its own baseline, and only when the difference is worth a look (≥ 20 ms at p99).
  if (inc >= 1.5 && e.recent_p99_us - e.base_p99_us >= 20000) {
    level = Math.max(level, inc >= 3 ? 2 : 1);
    why.push("p99 " + inc.toFixed(1) + "× its baseline (" + fmtUS(e.base_p99_us) + " → " + fmtUS(e.recent_p99_us) + ")");
  }
  // Failing more: recent error ratio above the baseline's; with no baseline yet, by the ratio itself.
  const hasBase = e.base_p99_us > 0 || e.base_error_ratio > 0;
  const re = e.recent_error_ratio || 0, be = e.base_error_ratio || 0;
  const d = hasBase ? re - be : re - 0.05;
  if (d >= 0.02 && re >= 1.5 * be) {
    level = Math.max(level, d >= 0.1 ? 2 : 1);
    why.push("errors " + fmtPct(re) + (hasBase ? " (baseline " + fmtPct(be) + ")" : ""));
  }
  if (e.queue_p99_us >= 1e6) {
    level = Math.max(level, e.queue_p99_us >= 5e6 ? 2 : 1);
    why.push("queue wait p99 " + fmtUS(e.queue_p99_us));
  }
  return { level, why };
}

// nodeHealth is the worst of a node's own state (saturated, a queue lagging) and the edges into it.
export function nodeHealth(n, inEdges) {
  let level = 0;
  const why = [];
  if (n.saturated) { level = 2; why.push("saturated: every worker busy, calls waiting"); }
  if (n.queue_oldest_ms >= 1000) {
    level = Math.max(level, n.queue_oldest_ms >= 5000 ? 2 : 1);
    why.push("queue " + n.queue_depth + " waiting, oldest " + fmtMS(n.queue_oldest_ms));
  }
  for (const e of inEdges || []) {
    const h = edgeHealth(e);
    if (h.level > level) level = h.level;
  }
  return { level, why };
}

// worstNow returns the top 10 edges by p99 increase, by error rate and by queue lag (what waits now: a node's
// oldest queued message, else the edge's queue wait p99; 50 ms and more).
export function worstNow(g) {
  const nodes = new Map(g.nodes.map((n) => [n.id, n]));
  const top = (list, key, keep) => list.filter(keep).sort((a, b) => key(b) - key(a)).slice(0, 10);
  const byP99 = top(g.edges, p99Increase, (e) => p99Increase(e) >= 1.2 && e.recent_p99_us - e.base_p99_us >= 5000)
    .map((e) => ({ e, value: p99Increase(e).toFixed(1) + "×", detail: fmtUS(e.base_p99_us) + " → " + fmtUS(e.recent_p99_us) }));
  const errRate = (e) => Math.max(e.recent_error_ratio || 0, e.error_ratio || 0);
  const byErr = top(g.edges, errRate, (e) => errRate(e) > 0)
    .map((e) => ({ e, value: fmtPct(errRate(e)), detail: (e.errors + e.timeouts + e.unroutable) + " in 60 s" +
      (e.timeouts ? " · " + e.timeouts + " timeouts" : "") }));
  const lag = (e) => {
    const n = nodes.get(e.to);
    return Math.max(n && n.queue_oldest_ms ? n.queue_oldest_ms * 1000 : 0, e.queue_p99_us || 0);
  };
  const byLag = top(g.edges, lag, (e) => lag(e) >= 50000)
    .map((e) => {
      const n = nodes.get(e.to);
      const live = n && n.queue_depth ? " · " + n.queue_depth + " queued now" : "";
      return { e, value: fmtUS(lag(e)), detail: "queue p99 " + fmtUS(e.queue_p99_us) + live };
    });
  return { byP99, byErr, byLag };
}

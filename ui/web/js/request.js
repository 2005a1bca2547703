// One request's RPCs as a tree nested by parent_id (the RPC whose handling published this one), with each call's
// queue wait, server time and reply transit in time order, a timeout drawn as the span past the deadline, and the
// span's events (heartbeats, broker events, a late reply) as markers.
import { el, fmtUS, svc, fmtDateTime, micros } from "./util.js";
import { getJSON } from "./api.js";
import { openPanel } from "./panel.js";

// T is a time in milliseconds, with the wire's microseconds kept as the fraction.
const T = (iso) => (iso ? micros(iso) / 1000 : null);

// tree orders the calls depth first, children by start time, and says each one's depth and whether its parent
// is ambiguous (more than one handler could have published it) or was not seen in the recent records.
export function tree(calls) {
  const byKey = new Map();
  for (const r of calls) {
    if (r.msg_id) byKey.set(r.msg_id, r);
    if (r.unique_id && !byKey.has(r.unique_id)) byKey.set(r.unique_id, r);
  }
  const kids = new Map(), roots = [], note = new Map();
  for (const r of calls) {
    const p = r.parent_id ? byKey.get(r.parent_id) : null;
    if (p && p !== r) {
      if (!kids.has(p.id)) kids.set(p.id, []);
      kids.get(p.id).push(r);
      continue;
    }
    roots.push(r);
    if (r.parent_candidates && r.parent_candidates.length) {
      const names = r.parent_candidates.map((k) => { const c = byKey.get(k); return c ? (c.method || c.kind) : "(not in view)"; });
      note.set(r.id, "ambiguous parent: one of " + names.join(", "));
    } else if (r.parent_id) note.set(r.id, "parent not in the recent records");
  }
  const start = (r) => T(r.published || r.delivered || r.replied) || 0;
  const out = [], seen = new Set();
  const visit = (r, depth) => {
    if (seen.has(r.id)) return;
    seen.add(r.id);
    out.push({ r, depth, note: note.get(r.id) || "" });
    for (const c of (kids.get(r.id) || []).sort((a, b) => start(a) - start(b))) visit(c, depth + 1);
  };
  for (const r of roots.sort((a, b) => start(a) - start(b))) visit(r, 0);
  for (const r of calls) if (!seen.has(r.id)) visit(r, 0); // a parent loop: still listed
  return out;
}

// segments are one call's phases, consecutive and in time order. A timed-out call's phases stop at the deadline;
// what came after it (a late reply, or just the record closing) is the timeout span. A cast, fanout or
// notification is its queue wait, then how long its first consumer held it (delivery to its ack), when seen.
export function segments(r) {
  const pub = T(r.published), del = T(r.delivered), rep = T(r.replied), rdel = T(r.reply_delivered);
  const out = [];
  const add = (kind, a, b) => { if (a !== null && b !== null && b >= a) out.push({ kind, a, b }); };
  if (r.kind !== "call") {
    if (del !== null) add("queue", pub, del); else add("cast", pub, pub);
    const ack = (r.acks || []).find((a) => a.callee === 0);
    if (ack && del !== null) add("held", del, T(ack.at));
    return out;
  }
  if (r.status !== "timeout" || T(r.deadline) === null) {
    add("queue", pub, del);
    add("server", del, rep);
    add("transit", rep, rdel);
    return out;
  }
  const dl = T(r.deadline);
  const cut = (t) => (t === null ? dl : Math.min(t, dl));
  add("queue", pub, cut(del));
  if (del !== null && del < dl) add("server", del, cut(rep));
  if (rep !== null && rep < dl) add("transit", rep, cut(rdel));
  add("timeout", dl, Math.max(dl, rdel || rep || dl));
  return out;
}

function markers(r) {
  const m = [];
  for (const t of r.heartbeat_times || []) m.push({ kind: "heartbeat", t: T(t), tip: "heartbeat " + fmtDateTime(t) });
  for (const ev of r.events || []) m.push({ kind: "event", t: T(ev.time), tip: ev.type + (ev.detail ? ": " + ev.detail : "") + " " + fmtDateTime(ev.time) });
  if (r.late_reply && r.reply_delivered) m.push({ kind: "late", t: T(r.reply_delivered), tip: "late reply " + fmtDateTime(r.reply_delivered) });
  return m.filter((x) => x.t !== null);
}

let drawn = 0; // calls of showRequest so far

export async function showRequest(id) {
  id = String(id).trim();
  if (!id) return;
  const body = openPanel("Request " + id);
  // The form and the route can both ask for the same request at once; only the latest call draws, or the panel
  // would hold the waterfall twice.
  const mine = ++drawn;
  let resp;
  try { resp = await getJSON("api/request/" + encodeURIComponent(id)); } catch (e) {
    if (mine !== drawn) return;
    body.appendChild(el("div", "errbox", "Cannot load request: " + e.message));
    return;
  }
  if (mine !== drawn) return;
  const calls = resp.calls || [];
  body.dataset.request = id;
  if (!calls.length) { body.appendChild(el("div", "hint", "No RPC with this request id in the recent records.")); return; }
  const rows = tree(calls);
  let start = Infinity, end = -Infinity;
  for (const { r } of rows) {
    for (const s of segments(r)) { start = Math.min(start, s.a); end = Math.max(end, s.b); }
    for (const mk of markers(r)) { start = Math.min(start, mk.t); end = Math.max(end, mk.t); }
  }
  if (!isFinite(start)) { start = 0; end = 1; }
  // Room after the last deadline for the span past it.
  if (rows.some(({ r }) => r.status === "timeout")) end += (end - start) * 0.03;
  const span = Math.max(1, end - start);
  const first = rows.map(({ r }) => r.published || r.delivered).filter(Boolean).sort((a, b) => micros(a) - micros(b))[0];
  body.appendChild(el("div", "hint", calls.length + " RPCs · " + span.toFixed(span < 10 ? 2 : 0) + " ms from first publish to last reply · from " + fmtDateTime(first)));
  const lg = el("div", "wf-legend");
  lg.append(el("span", "lq", "queue wait"), el("span", "ls", "server time"), el("span", "lt", "reply transit"),
    el("span", "lk", "held by the consumer"), el("span", "lx", "past the deadline"), el("span", "lh", "heartbeat / event"));
  body.appendChild(lg);
  const wf = el("div", "wf");
  const axis = el("div", "wf-axis");
  axis.append(el("span", "", "0 ms"), el("span", "", (span / 2).toFixed(0) + " ms"), el("span", "", span.toFixed(0) + " ms"));
  wf.appendChild(axis);
  const pct = (t) => ((t - start) / span) * 100;
  for (const { r, depth, note } of rows) {
    const row = el("div", "wf-row" + (r.status !== "ok" ? " error" : ""));
    row.dataset.id = String(r.id);
    row.dataset.depth = String(depth);
    if (note) row.dataset.ambiguous = note.startsWith("ambiguous") ? "yes" : "missing";
    const label = el("div", "wf-label");
    label.style.paddingLeft = (4 + depth * 14) + "px";
    if (depth) label.appendChild(el("span", "tree", "└ "));
    label.append(el("span", "p", svc(r.caller) + " → " + (svc(r.callee) || r.topic || "?") + " "),
      el("span", "m", r.method || r.event_type || r.kind));
    if (r.status !== "ok") label.appendChild(el("span", "st", " " + r.status));
    if (note) label.appendChild(el("div", "note", note));
    const track = el("div", "wf-track");
    for (const s of segments(r)) {
      const d = el("div", "wf-seg seg-" + s.kind);
      const l = pct(s.a), w = Math.max(s.kind === "timeout" ? 1.5 : 0.3, pct(s.b) - l);
      d.style.left = l.toFixed(3) + "%";
      d.style.width = w.toFixed(3) + "%";
      d.title = ({ timeout: "past the deadline", held: "held by the consumer, delivery to ack" }[s.kind] || s.kind) + ": " + (s.b - s.a).toFixed(1) + " ms";
      d.dataset.seg = s.kind;
      d.dataset.a = String(s.a);
      d.dataset.b = String(s.b);
      track.appendChild(d);
    }
    for (const mk of markers(r)) {
      const d = el("div", "wf-mark mk-" + mk.kind);
      d.style.left = pct(mk.t).toFixed(3) + "%";
      d.title = mk.tip;
      track.appendChild(d);
    }
    const segs = segments(r);
    const last = segs.length ? segs[segs.length - 1].b : null;
    if (last !== null) {
      const d = el("span", "wf-dur", r.kind === "call" ? fmtUS(r.duration_us) : r.kind);
      const at = pct(last);
      if (at < 85) d.style.left = at.toFixed(2) + "%";
      else { d.style.right = (100 - at).toFixed(2) + "%"; d.classList.add("inside"); }
      track.appendChild(d);
    }
    row.append(label, track);
    row.addEventListener("click", () => { location.hash = "#/call/" + r.id; });
    wf.appendChild(row);
  }
  body.appendChild(wf);
}

// One call's detail: what the wire said about it, timestamps in the page's time zone, the remote exception, args.
import { el, fmtUS, fmtDateTime, micros } from "./util.js";
import { getJSON } from "./api.js";
import { openPanel, setTitle, kv, reqLink } from "./panel.js";

function epText(ep) {
  if (!ep) return null;
  return [ep.service, ep.pid ? "pid " + ep.pid : "", ep.host, ep.user ? "user " + ep.user : "", ep.vhost ? "vhost " + ep.vhost : ""]
    .filter(Boolean).join(" · ") + (ep.connection ? "\n" + ep.connection : "");
}

function pretty(raw) {
  if (raw === undefined || raw === null) return null;
  try { return JSON.stringify(raw, null, 2); } catch (e) { return String(raw); }
}

export async function showCall(id) {
  const body = openPanel("Call " + id);
  let r;
  try { r = await getJSON("api/calls/" + encodeURIComponent(id)); } catch (e) {
    body.appendChild(el("div", "errbox", "Cannot load call: " + e.message));
    return;
  }
  setTitle((r.kind || "") + " " + (r.method || r.event_type || "") + " — " + (r.status || ""));
  body.dataset.call = String(r.id);
  const acts = el("div", "actions");
  const rid = r.request_id || r.global_request_id;
  if (rid) {
    const a = el("a", "", "Request tree");
    a.setAttribute("href", "#/request/" + encodeURIComponent(rid));
    acts.appendChild(a);
  }
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
      ["late reply", r.late_reply ? "yes (reply arrived after the deadline)" : "no"], ["cause", r.cause]]));
  }
  if (r.status === "unroutable") body.appendChild(kv([["returned", (r.return_code || "") + " " + (r.return_text || "")]]));

  body.appendChild(el("h3", "", "RPC"));
  body.appendChild(kv([["kind", r.kind], ["status", r.status], ["method", r.method], ["event type", r.event_type],
    ["publisher id", r.publisher_id], ["priority", r.priority], ["topic", r.topic], ["server", r.server],
    ["exchange", r.exchange === "" ? "(default)" : r.exchange], ["routing key", r.routing_key], ["queue", r.queue],
    ["namespace", r.namespace], ["version", r.version], ["protocol", r.protocol], ["msg id", r.msg_id],
    ["unique id", r.unique_id], ["message id", r.message_id], ["request id", reqLink(r.request_id)],
    ["global request id", reqLink(r.global_request_id)], ["parent", r.parent_id],
    ["parent (ambiguous)", r.parent_candidates && r.parent_candidates.length ? "one of " + r.parent_candidates.join(", ") : ""],
    ["caller", epText(r.caller)], ["callee", epText(r.callee)],
    ["consumers", r.callees && r.callees.length > 1 ? r.callees.map((c) => c.service + (c.host ? "@" + c.host : "")).join(", ") : ""],
    ["deliveries", r.deliveries], ["request bytes", r.request_bytes], ["reply bytes", r.reply_bytes],
    ["truncated", r.truncated ? "yes" : ""]]));

  body.appendChild(el("h3", "", "Timestamps"));
  const t0 = r.published ? micros(r.published) : null;
  const rel = (iso) => {
    if (!iso) return null;
    if (t0 === null) return fmtDateTime(iso);
    const d = micros(iso) - t0;
    return fmtDateTime(iso) + "   (" + (d < 0 ? "−" + fmtUS(-d) : d === 0 ? "+0" : "+" + fmtUS(d)) + ")";
  };
  body.appendChild(kv([["published", rel(r.published)], ["confirmed", rel(r.confirmed)], ["delivered", rel(r.delivered)],
    ["replied", rel(r.replied)], ["reply delivered", rel(r.reply_delivered)], ["deadline", rel(r.deadline)],
    ["heartbeats", r.heartbeats || ""], ["duration", fmtUS(r.duration_us)], ["queue wait", fmtUS(r.queue_us)],
    ["server time", fmtUS(r.server_us)], ["waiting for a worker", r.server_wait_us ? fmtUS(r.server_wait_us) : ""],
    ["held by its consumer", r.ack_us ? fmtUS(r.ack_us) + " (delivery → ack)" : ""]]));
  if (r.acks && r.acks.length) {
    // Each consumer's answer to its delivery: how long it held the message, and what it said.
    body.appendChild(el("h3", "", "Consumers' answers"));
    body.appendChild(kv(r.acks.map((a) => {
      const c = (r.callees || [])[a.callee] || r.callee || {};
      const held = micros(a.at) - micros(a.delivered);
      return [(c.service || "consumer") + (c.host ? "@" + c.host : ""), a.outcome + (held > 0 ? " after " + fmtUS(held) : " at once")];
    })));
  }
  if (r.events && r.events.length) {
    body.appendChild(el("h3", "", "Events"));
    body.appendChild(kv(r.events.map((ev) => [ev.type + (ev.count > 1 ? " ×" + ev.count : ""), rel(ev.time) + (ev.detail ? "  " + ev.detail : "")])));
  }

  if (r.args !== undefined) {
    body.appendChild(el("h3", "", "Args (redacted)"));
    const p = el("pre", "", pretty(r.args));
    p.id = "detail-args";
    body.appendChild(p);
  }
  if (r.result !== undefined) { body.appendChild(el("h3", "", "Result (redacted)")); body.appendChild(el("pre", "", pretty(r.result))); }
}

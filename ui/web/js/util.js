// Small helpers shared by every module: DOM building (text only), formatting, the page's one time zone.
//
// Safety rule for the page: every string that came from the wire (service names, methods, args, errors...) is
// inserted with textContent, createTextNode or setAttribute on a non-URL attribute. No module uses innerHTML,
// outerHTML, insertAdjacentHTML or document.write; the server's Content-Security-Policy backs this up.

const SVGNS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

export function sv(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

export function fmtUS(us) {
  if (us === null || us === undefined || us <= 0) return "–";
  if (us < 1000) return Math.round(us) + " µs";
  if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + " ms";
  return (us / 1e6).toFixed(2) + " s";
}

// fmtShort is a latency in two or three digits, for the graph's boxes.
export function fmtShort(us) {
  if (!(us > 0)) return "–";
  if (us < 1000) return Math.round(us) + "µs";
  if (us < 1e4) return (us / 1000).toFixed(1) + "ms";
  if (us < 1e6) return Math.round(us / 1000) + "ms";
  return (us / 1e6).toFixed(us < 1e7 ? 1 : 0) + "s";
}

export function fmtMS(ms) { return ms > 0 ? fmtUS(ms * 1000) : "–"; }

export function fmtRate(r) {
  if (!r) return "0";
  if (r >= 100) return r.toFixed(0);
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

export function fmtCount(n) {
  if (n === undefined || n === null) return "–";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

export function fmtPct(x) {
  if (!x) return "0%";
  const p = x * 100;
  return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + "%";
}

// ---------- time zone: UTC unless the user picked local; the same everywhere on the page ----------
let zone = "utc";
try { if (localStorage.getItem("amqptrace.tz") === "local") zone = "local"; } catch (e) { /* storage off */ }
const zoneListeners = [];

export function timeZone() { return zone; }
export function setTimeZone(z) {
  zone = z === "local" ? "local" : "utc";
  try { localStorage.setItem("amqptrace.tz", zone); } catch (e) { /* storage off */ }
  for (const f of zoneListeners) f(zone);
}
export function onTimeZone(f) { zoneListeners.push(f); }
export function zoneName() {
  if (zone === "utc") return "UTC";
  const off = -new Date().getTimezoneOffset();
  const p = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");
  return "local (UTC" + (off >= 0 ? "+" : "−") + p(off / 60) + ":" + p(off % 60) + ")";
}

function parts(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  if (isNaN(d)) return null;
  const u = zone === "utc";
  return {
    Y: u ? d.getUTCFullYear() : d.getFullYear(), M: (u ? d.getUTCMonth() : d.getMonth()) + 1,
    D: u ? d.getUTCDate() : d.getDate(), h: u ? d.getUTCHours() : d.getHours(),
    m: u ? d.getUTCMinutes() : d.getMinutes(), s: u ? d.getUTCSeconds() : d.getSeconds(),
    ms: u ? d.getUTCMilliseconds() : d.getMilliseconds(),
  };
}
const pad = (n, w) => String(n).padStart(w || 2, "0");

// fmtTime is a clock time to the millisecond in the page's zone.
export function fmtTime(iso) {
  const p = parts(iso);
  if (!p) return "–";
  return pad(p.h) + ":" + pad(p.m) + ":" + pad(p.s) + "." + pad(p.ms, 3);
}

// fmtDateTime is a full timestamp in the page's zone, with the zone named.
export function fmtDateTime(iso) {
  const p = parts(iso);
  if (!p) return "–";
  // Sub-millisecond digits from the wire's RFC 3339 string, when it has them.
  const frac = /\.(\d+)/.exec(String(iso));
  const sub = frac && frac[1].length > 3 ? frac[1].slice(3, 6) : "";
  return p.Y + "-" + pad(p.M) + "-" + pad(p.D) + " " + pad(p.h) + ":" + pad(p.m) + ":" + pad(p.s) + "." +
    pad(p.ms, 3) + sub + (zone === "utc" ? " UTC" : "");
}

// micros is an RFC 3339 time in microseconds since the epoch, keeping the digits past the millisecond that Date
// drops.
export function micros(iso) {
  const ms = Date.parse(iso);
  if (isNaN(ms)) return NaN;
  const frac = /\.(\d+)/.exec(String(iso));
  return ms * 1000 + (frac && frac[1].length > 3 ? Number(frac[1].slice(3, 6).padEnd(3, "0")) : 0);
}

export function firstTime(r) { return r.published || r.delivered || r.replied || r.reply_delivered; }
export function svc(ep) { return ep ? (ep.service || "?") : ""; }

// Text measurement for layout (box sizes before the SVG text exists).
const canvas = document.createElement("canvas");
const ctx2d = canvas.getContext("2d");
export function textWidth(text, font) {
  ctx2d.font = font;
  return ctx2d.measureText(text).width;
}

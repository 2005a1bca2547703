// The side panel that call details and request trees open in.
import { $, el, clear } from "./util.js";

let onClose = () => {};

export function initPanel(close) {
  onClose = close;
  $("panelclose").addEventListener("click", () => onClose());
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !$("panel").hidden) onClose(); });
}

export function openPanel(title) {
  $("paneltitle").textContent = title;
  const body = $("panelbody");
  clear(body);
  delete body.dataset.call;
  delete body.dataset.request;
  $("panel").hidden = false;
  return body;
}

export function setTitle(t) { $("paneltitle").textContent = t; }
export function closePanel() { $("panel").hidden = true; }

export function kv(pairs) {
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

// reqLink is a request id that opens its tree (a click on [data-req] anywhere routes to #/request/<id>).
export function reqLink(id) {
  if (!id) return null;
  const a = el("span", "link", id);
  a.dataset.req = id;
  return a;
}

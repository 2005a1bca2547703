// The "worst now" list beside the graph: top 10 edges by p99 increase, by error rate and by queue lag.
import { $, el, clear } from "./util.js";
import { worstNow } from "./health.js";

export function renderWorst(g, onPick) {
  const box = $("worst");
  clear(box);
  const w = worstNow(g);
  const section = (title, rows, key) => {
    const s = el("section", "wsec");
    s.dataset.list = key;
    s.appendChild(el("h3", "", title));
    if (!rows.length) { s.appendChild(el("div", "hint", "nothing stands out")); box.appendChild(s); return; }
    const ol = el("ol");
    for (const r of rows) {
      const li = el("li");
      li.dataset.edge = r.e.id;
      const who = el("div", "who");
      who.append(el("span", "", r.e.from), el("span", "arrow", " → "), el("span", "", r.e.to));
      li.append(el("span", "val", r.value), who, el("div", "det", r.detail));
      li.addEventListener("click", () => onPick(r.e));
      ol.appendChild(li);
    }
    s.appendChild(ol);
    box.appendChild(s);
  };
  section("p99 up vs baseline", w.byP99, "p99");
  section("error rate", w.byErr, "errors");
  section("queue lag", w.byLag, "queue");
}

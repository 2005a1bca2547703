// The server's API: JSON over fetch, and the websocket of snapshot + deltas with reconnect and backoff.

export async function getJSON(url) {
  const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error(res.status + " " + (await res.text()).trim());
  return res.json();
}

// connect keeps a websocket to api/ws open. onMessage gets each snapshot and each in-order delta; a gap in the
// sequence drops the socket, and the reconnect starts from a fresh snapshot. onState gets "connecting", "live" or
// "down" with a text for the header.
export function connect(onMessage, onState) {
  let backoff = 500, timer = 0, ws = null, seq = -1;
  const schedule = () => {
    if (timer) return;
    const wait = backoff * (0.75 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, 10000);
    timer = setTimeout(open, wait);
  };
  function open() {
    timer = 0;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      location.pathname.replace(/[^/]*$/, "") + "api/ws";
    let sock;
    try { sock = new WebSocket(url); } catch (e) { schedule(); return; }
    ws = sock;
    onState("connecting", "connecting…");
    sock.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "snapshot") {
        backoff = 500;
        onState("live", "live");
      } else if (m.type === "delta") {
        if (m.seq !== seq + 1) {
          onState("connecting", "resyncing…");
          sock.close();
          return;
        }
      } else return;
      seq = m.seq;
      onMessage(m);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      onState("down", "disconnected — retrying");
      schedule();
    };
    sock.onerror = () => { /* onclose follows */ };
  }
  open();
}
